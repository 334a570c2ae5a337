"""The stream source's consumer settings: its initial position and its
:class:`~streamkit_kinesis.consumer.ConsumerConfig` defaults."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from streamkit.errors import ConfigError
from streamkit_kinesis.consumer import ConsumerConfig, InitialPosition

if TYPE_CHECKING:
    from collections.abc import Mapping


def initial_position_of(value: InitialPosition | str | datetime) -> InitialPosition:
    """``"TRIM_HORIZON"``, ``"LATEST"``, a datetime (AT_TIMESTAMP) or an InitialPosition."""
    if isinstance(value, InitialPosition):
        return value
    if isinstance(value, datetime):
        return InitialPosition.at_timestamp(value)
    if value not in ("TRIM_HORIZON", "LATEST"):
        raise ConfigError(
            f"initial_position must be 'TRIM_HORIZON', 'LATEST', a datetime or an "
            f"InitialPosition, got {value!r}"
        )
    return InitialPosition.trim_horizon() if value == "TRIM_HORIZON" else InitialPosition.latest()


def consumer_config(  # noqa: PLR0917
    stream: str,
    app_name: str,
    worker_id: str,
    initial_position: InitialPosition | str | datetime,
    failover_time: float,
    overrides: Mapping[str, Any] | None,
) -> ConsumerConfig:
    """The consumer settings of a stream source: 1 s shutdown grace, then ``overrides``; take
    cycles (every ``2 * failover_time``: one lease-table scan each), GetRecords pacing
    (``idle_time``) and shard sync are the consumer's KCL-like defaults."""
    options: dict[str, Any] = {
        "failover_time": failover_time,
        "shutdown_grace": 1.0,
        "parent_poll_interval": 2.0,
        **(overrides or {}),
    }
    return ConsumerConfig(
        app_name=app_name,
        stream=stream,
        worker_id=worker_id,
        initial_position=initial_position_of(initial_position),
        **options,
    )

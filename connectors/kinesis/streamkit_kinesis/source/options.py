"""The stream source's consumer settings: its initial position and its
:class:`~streamkit_kinesis.consumer.ConsumerConfig` defaults."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
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


def with_retrieval(
    overrides: Mapping[str, Any] | None, retrieval: str | None
) -> Mapping[str, Any] | None:
    """``overrides`` with ``retrieval`` set (a different one there is refused)."""
    if retrieval is None:
        return overrides
    given = (overrides or {}).get("retrieval", retrieval)
    if given != retrieval:
        raise ConfigError(
            f"retrieval={retrieval!r} and consumer_options['retrieval']={given!r} differ; "
            "pass only one of them"
        )
    return {**(overrides or {}), "retrieval": retrieval}


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


def pin_latest(config: ConsumerConfig, now: float) -> ConsumerConfig:
    """``config`` with LATEST pinned to AT_TIMESTAMP of ``now`` (a wall-clock time).

    For the stream source, LATEST means records put after ``open`` began: the consumer
    starts new leases AT_TIMESTAMP of that moment (not at a LATEST iterator, whose start no
    other reader can find), so the tip read of ``available_now`` starts where the consumer
    does. On servers whose AT_TIMESTAMP has whole-second resolution (kinesis-mock, i.e.
    LocalStack) this also includes records put up to a second before.
    """
    if config.initial_position.kind != "LATEST":
        return config
    at = datetime.fromtimestamp(now, UTC)
    return replace(config, initial_position=InitialPosition.at_timestamp(at))

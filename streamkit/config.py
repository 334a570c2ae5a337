"""Where AWS-compatible services live: one value shared by every client streamkit builds.

The same :class:`AwsEndpoint` configures the Kinesis producer and consumer, the DynamoDB
lease store and S3 reads and writes, so "this endpoint, these credentials, this region" is
said once.

The process-wide default (:func:`configure`, :func:`current_endpoint`) is what ``s3://``
paths, checkpoints and connectors use when no endpoint is passed. ``"localstack"`` as an
endpoint (in :func:`configure` or ``STREAMKIT_AWS_ENDPOINT``) resolves through
``localstack-client``'s configuration, so ``LOCALSTACK_HOST``, ``USE_SSL`` and
``AWS_ENDPOINT_URL`` work as LocalStack users expect.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    import pyarrow.fs as pafs

ENDPOINT_ENV = "STREAMKIT_AWS_ENDPOINT"
"""Environment variable naming an endpoint URL (LocalStack, moto) used when none is given;
the word ``localstack`` means LocalStack as ``localstack-client`` locates it."""

LOCALSTACK = "localstack"
"""The endpoint name that means "LocalStack, wherever its own configuration says"."""


@dataclass(frozen=True)
class AwsEndpoint:
    """An AWS-compatible endpoint with its region and credentials.

    ``url=None`` means real AWS with the default credential chain (unless keys are given).
    """

    url: str | None = None
    """Endpoint URL, e.g. ``http://localhost:4566``; ``None`` for real AWS."""
    region: str = "us-east-1"
    """AWS region name."""
    access_key_id: str | None = None
    """Access key; ``None`` uses the default credential chain (or ``test`` for a local URL)."""
    secret_access_key: str | None = field(default=None, repr=False)
    """Secret key matching ``access_key_id``."""

    @classmethod
    def from_env(cls, url: str | None = None) -> AwsEndpoint:
        """Build from ``url`` or ``STREAMKIT_AWS_ENDPOINT``, region from ``AWS_DEFAULT_REGION``."""
        url = url or os.environ.get(ENDPOINT_ENV) or None
        if url == LOCALSTACK:
            return cls.localstack()
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        return cls(
            url=url,
            region=region,
            access_key_id=os.environ.get("AWS_ACCESS_KEY_ID"),
            secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY"),
        )

    @classmethod
    def local(cls, url: str, region: str = "us-east-1") -> AwsEndpoint:
        """An endpoint for a local emulator with dummy ``test`` credentials."""
        return cls(url=url, region=region, access_key_id="test", secret_access_key="test")

    @classmethod
    def localstack(cls, host: str | None = None) -> AwsEndpoint:
        """LocalStack located by ``localstack-client``: ``AWS_ENDPOINT_URL`` if set, else
        ``LOCALSTACK_HOST`` (default ``localhost:4566``; ``host`` overrides it), ``https``
        when ``USE_SSL`` is set; dummy ``test`` credentials, region from the environment."""
        from streamkit._deps import require

        lc = require("localstack_client.config", "kinesis")
        url: str = lc.get_service_endpoint("kinesis", localstack_host=host)
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        return cls.local(url, region or "us-east-1")

    def _keys(self) -> tuple[str | None, str | None]:
        if self.access_key_id is None and self.url is not None:
            return "test", "test"
        return self.access_key_id, self.secret_access_key

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``boto3.client(service, **kwargs)``."""
        key, secret = self._keys()
        kwargs: dict[str, Any] = {"region_name": self.region}
        if self.url is not None:
            kwargs["endpoint_url"] = self.url
        if key is not None:
            kwargs["aws_access_key_id"] = key
            kwargs["aws_secret_access_key"] = secret
        return kwargs

    def client(self, service: str, **config: Any) -> Any:
        """A boto3 client for ``service`` on this endpoint; ``config`` goes to botocore Config."""
        from streamkit._deps import require

        boto3 = require("boto3", "s3")
        botocore_config = require("botocore.config", "s3")
        cfg = botocore_config.Config(**config) if config else None
        with _SESSIONS.lock:
            session = _SESSIONS.get("boto3", boto3.session.Session)
            return session.client(service, config=cfg, **self.client_kwargs())

    def s3_filesystem(self) -> pafs.S3FileSystem:
        """A pyarrow S3 filesystem on this endpoint (path-style addressing for emulators)."""
        import pyarrow.fs as pafs

        key, secret = self._keys()
        kwargs: dict[str, Any] = {"region": self.region}
        if key is not None:
            kwargs["access_key"] = key
            kwargs["secret_key"] = secret
        if self.url is not None:
            scheme, _, rest = self.url.partition("://")
            kwargs["endpoint_override"] = rest or scheme
            kwargs["scheme"] = scheme if rest else "https"
            kwargs["force_virtual_addressing"] = False
        return pafs.S3FileSystem(**kwargs)


class _SharedSessions:
    """One boto3/botocore session per kind for the whole process: a client made from a
    fresh session re-reads botocore's service models and endpoint data (~70-90 ms of CPU
    each), one made from a shared session ~3 ms. Sessions are not thread-safe, so every
    client is created holding :attr:`lock`; clients themselves are. A forked child starts
    with none (a lock held by another thread at the fork would never be released there)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._made: dict[object, Any] = {}
        os.register_at_fork(after_in_child=self._reset)

    def get(self, kind: object, make: Callable[[], Any]) -> Any:
        """The session of ``kind``, made by ``make`` the first time (hold :attr:`lock`)."""
        if kind not in self._made:
            self._made[kind] = make()
        return self._made[kind]

    def _reset(self) -> None:
        self.lock = threading.Lock()
        self._made = {}


_SESSIONS = _SharedSessions()


def shared_session(kind: object, make: Callable[[], Any]) -> tuple[Any, threading.Lock]:
    """The process's session of ``kind`` (made by ``make`` once) and the lock to hold
    while creating a client from it (see :class:`_SharedSessions`). Sessions configured
    differently (e.g. a response parser option) need different ``kind`` values."""
    with _SESSIONS.lock:
        return _SESSIONS.get(kind, make), _SESSIONS.lock


_configured: dict[str, AwsEndpoint] = {}


def configure(endpoint: AwsEndpoint | str | None = None) -> None:
    """Set the process-wide default endpoint (a URL, ``"localstack"`` or an AwsEndpoint).

    ``None`` goes back to the environment (``STREAMKIT_AWS_ENDPOINT``, AWS defaults).
    """
    _configured.clear()
    if endpoint is not None:
        ep = AwsEndpoint.from_env(endpoint) if isinstance(endpoint, str) else endpoint
        _configured["default"] = ep


def current_endpoint() -> AwsEndpoint:
    """The configured endpoint, else one built from the environment."""
    return _configured.get("default") or AwsEndpoint.from_env()


def port_or_env(port: int | None, variable: str) -> int | None:
    """``port`` when given, else the integer in ``$variable`` when set and not blank;
    None when neither (the caller then serves nothing)."""
    if port is not None:
        return port
    raw = os.environ.get(variable, "").strip()
    return int(raw) if raw else None

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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
        """A boto3 client for ``service`` on this endpoint; ``config`` goes to botocore Config.

        Each call makes a new client from a new session that shares the process's loaded
        botocore data (:mod:`streamkit.aws_sessions`: ~7 ms of CPU instead of ~70)."""
        from streamkit._deps import require
        from streamkit.aws_sessions import boto3_client

        botocore_config = require("botocore.config", "s3")
        cfg = botocore_config.Config(**config) if config else None
        return boto3_client(service, cfg, **self.client_kwargs())

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

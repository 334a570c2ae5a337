"""The pytest plugin of streamkit's suites (``-p streamkit.testing.fixtures``): session
fixtures that start real servers on free loopback ports and stop them by PID.

Fixture names are stable; other tests depend on them:

- ``moto_endpoint``: AwsEndpoint on moto's threaded server (Kinesis, DynamoDB, S3).
- ``localstack_endpoint``: AwsEndpoint on LocalStack (host mode, installed into
  ``.cache/servers``), or on ``$STREAMKIT_AWS_ENDPOINT`` if set (then nothing is started).
- ``kinesalite_endpoint``: AwsEndpoint on an in-memory kinesalite (Kinesis only; fast).
- ``kafka_bootstrap``: ``host:port`` of an Apache Kafka broker, or ``$STREAMKIT_KAFKA_BOOTSTRAP``.
- ``tansu_bootstrap``: ``host:port`` of a Tansu broker (the second Kafka-protocol peer).
- ``any_kafka``: parametrized over both brokers (ids ``[kafka]``, ``[tansu]``).
- ``aws_backend`` / ``aws_endpoint``: parametrized over ``localstack`` and ``moto``; a test
  using ``aws_endpoint`` runs once per backend (ids ``[localstack]``, ``[moto]``). Mark a
  known moto gap with ``@pytest.mark.moto_gap("reason")``: on moto the test then runs as a
  strict xfail (it must fail there), on LocalStack as usual.
- ``spark``: a local PySpark session (``streamkit.testing.spark``), for the differential
  tests against Spark; tests using it are marked ``spark``.
- ``servers_cache_dir``: the install cache, for tests that start their own server
  (e.g. ``with start_tansu(servers_cache_dir) as broker: ...`` to restart a broker).

Servers start lazily, once per session, only if a selected test needs them. A first run
installs them (about a minute; progress is printed); ``make servers`` does it ahead.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from contextlib import AbstractContextManager, ExitStack
from typing import TYPE_CHECKING, Any

import pytest

from streamkit.config import ENDPOINT_ENV, AwsEndpoint

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

KAFKA_ENV = "STREAMKIT_KAFKA_BOOTSTRAP"
"""Environment variable naming an external Kafka (``host:port[,host:port]``)."""

AWS_BACKENDS = ("localstack", "moto")
KAFKA_BACKENDS = ("kafka", "tansu")


MARKERS = (
    "integration: talks to real server processes started by the suite",
    "localstack: needs LocalStack (started by the suite, or STREAMKIT_AWS_ENDPOINT)",
    "moto: runs against moto's server",
    "slow: takes more than a few seconds",
    "moto_gap(reason): known moto gap; on the moto backend the test is a strict xfail",
    "spark: runs PySpark (a local JVM, Java 17) beside streamkit (tests/differential)",
    "browser: drives Debian's headless /usr/bin/chromium (.ci/install-servers.sh installs it)",
)


def pytest_configure(config: pytest.Config) -> None:
    for marker in MARKERS:
        config.addinivalue_line("markers", marker)


@pytest.fixture(scope="session")
def servers_cache_dir() -> Path:
    """Install cache of the test servers: ``$STREAMKIT_SERVERS_CACHE`` or ``.cache/servers``."""
    from streamkit.testing.servers import default_cache_dir

    return default_cache_dir()


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[AwsEndpoint]:
    """moto's in-process threaded server; a second, pure-Python peer for basic tests."""
    from streamkit.testing.servers.moto import start_moto

    with start_moto() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def localstack_endpoint(
    request: pytest.FixtureRequest, servers_cache_dir: Path
) -> Iterator[AwsEndpoint]:
    """LocalStack (Kinesis, DynamoDB, S3), warmed up; or ``$STREAMKIT_AWS_ENDPOINT``."""
    if os.environ.get(ENDPOINT_ENV):
        yield AwsEndpoint.from_env()
        return
    from streamkit.testing.servers import start_localstack

    with ExitStack() as stack:
        with _visible_progress(request):
            server = stack.enter_context(start_localstack(servers_cache_dir))
        yield server.endpoint


@pytest.fixture(scope="session")
def kinesalite_endpoint(
    request: pytest.FixtureRequest, servers_cache_dir: Path
) -> Iterator[AwsEndpoint]:
    """An in-memory kinesalite (Kinesis only) for volume and benchmark tests."""
    from streamkit.testing.servers import start_kinesalite

    with ExitStack() as stack:
        with _visible_progress(request):
            server = stack.enter_context(start_kinesalite(servers_cache_dir))
        yield server.endpoint


@pytest.fixture(scope="session")
def kafka_bootstrap(request: pytest.FixtureRequest, servers_cache_dir: Path) -> Iterator[str]:
    """``bootstrap_servers`` of an Apache Kafka broker (KRaft, one node, started from the
    jars in the server cache), or ``$STREAMKIT_KAFKA_BOOTSTRAP``."""
    if external := os.environ.get(KAFKA_ENV):
        yield external
        return
    from streamkit.testing.servers import start_kafka

    with ExitStack() as stack:
        with _visible_progress(request):
            broker = stack.enter_context(start_kafka(servers_cache_dir))
        yield broker.bootstrap


@pytest.fixture(scope="session")
def tansu_bootstrap(request: pytest.FixtureRequest, servers_cache_dir: Path) -> Iterator[str]:
    """``bootstrap_servers`` of a Tansu broker (memory storage): the second Kafka peer.

    Tansu gaps (see SERVERS.md): use ``session_timeout_ms=3000, heartbeat_interval_ms=1000``.
    """
    from streamkit.testing.servers import start_tansu

    with ExitStack() as stack:
        with _visible_progress(request):
            broker = stack.enter_context(start_tansu(servers_cache_dir))
        yield broker.bootstrap


_SPARK: list[Any] = []
"""The session of :func:`spark`, once started."""


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """One local SparkSession for the whole test session (started on first use, ~15 s).

    After each test module, the finished queries' ``foreachBatch`` callbacks are cut from
    the test objects they close over (``streamkit.testing.spark.release_finished_callbacks``),
    so that the JVM can free those queries."""
    from streamkit.testing.spark import spark_session

    with spark_session() as session:
        _SPARK.append(session)
        try:
            yield session
        finally:
            _SPARK.clear()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """After a module's last test (and its module fixtures), release Spark's callbacks."""
    yield
    module = getattr(item, "module", None)
    if _SPARK and (nextitem is None or getattr(nextitem, "module", None) is not module):
        import gc

        from streamkit.testing.spark import release_finished_callbacks

        if release_finished_callbacks(_SPARK[0]):
            gc.collect()  # the freed test objects sit in cycles; their handles detach now


@pytest.fixture(params=KAFKA_BACKENDS)
def any_kafka(request: pytest.FixtureRequest) -> str:
    """``bootstrap_servers`` of each Kafka peer in turn: Apache Kafka, then Tansu (ids
    ``[kafka]``, ``[tansu]``); for the tests every Kafka-protocol broker must pass."""
    bootstrap: str = request.getfixturevalue(f"{request.param}_bootstrap")
    return bootstrap


@pytest.fixture(params=AWS_BACKENDS)
def aws_backend(request: pytest.FixtureRequest) -> str:
    """Name of the AWS peer this test instance runs on: ``localstack`` or ``moto``."""
    backend: str = request.param
    return backend


@pytest.fixture
def aws_endpoint(request: pytest.FixtureRequest, aws_backend: str) -> AwsEndpoint:
    """The endpoint of ``aws_backend``; applies ``moto_gap`` markers as strict xfail on moto."""
    marker = request.node.get_closest_marker("moto_gap")
    if aws_backend == "moto" and marker is not None:
        reason = marker.args[0] if marker.args else marker.kwargs.get("reason", "moto gap")
        request.applymarker(pytest.mark.xfail(reason=f"moto gap: {reason}", strict=True))
    endpoint: AwsEndpoint = request.getfixturevalue(f"{aws_backend}_endpoint")
    return endpoint


def _visible_progress(request: pytest.FixtureRequest) -> AbstractContextManager[None]:
    """Let install progress (first run only) reach the terminal past pytest's capture."""
    capman = request.config.pluginmanager.getplugin("capturemanager")
    if capman is None:
        return contextlib.nullcontext()
    ctx: AbstractContextManager[None] = capman.global_and_fixture_disabled()
    return ctx


@pytest.fixture
def bucket(localstack_endpoint: AwsEndpoint) -> Iterator[str]:
    """A fresh S3 bucket on LocalStack, emptied and removed after the test."""
    s3 = localstack_endpoint.client("s3")
    name = f"sk-test-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=name)
    yield name
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
        for obj in page.get("Contents", []):
            s3.delete_object(Bucket=name, Key=obj["Key"])
    s3.delete_bucket(Bucket=name)


@pytest.fixture
def configured(localstack_endpoint: AwsEndpoint) -> Iterator[AwsEndpoint]:
    """``sk.configure`` pointed at LocalStack for the test (default endpoint of s3:// paths)."""
    import streamkit as sk

    sk.configure(localstack_endpoint)
    try:
        yield localstack_endpoint
    finally:
        sk.configure(None)

"""Clients from :meth:`AwsEndpoint.client` share the process's loaded botocore data and
nothing else: each keeps its endpoint, region, keys and config, even when made from many
threads at once, and default-chain credentials are resolved for each client."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from streamkit.config import AwsEndpoint

if TYPE_CHECKING:
    import pytest


def _access_key(client: Any) -> str:
    credentials = client._get_credentials()  # what the client signs with
    return str(credentials.access_key)


def test_clients_share_the_loader_and_keep_boto3_additions() -> None:
    ep = AwsEndpoint.local("http://127.0.0.1:9")
    dynamodb, kinesis, s3 = ep.client("dynamodb"), ep.client("kinesis"), ep.client("s3")
    assert getattr(dynamodb, "_loader") is getattr(kinesis, "_loader")  # noqa: B009
    assert getattr(kinesis, "_loader") is getattr(s3, "_loader")  # noqa: B009
    assert hasattr(s3, "upload_file")  # boto3's S3 transfer methods
    paths = getattr(s3, "_loader").search_paths  # noqa: B009
    assert len(paths) == len(set(paths))  # not one more boto3 data folder per client


def test_each_client_keeps_its_endpoint_region_keys_and_config() -> None:
    endpoints = [
        AwsEndpoint(url=f"http://127.0.0.1:{port}", region=region, access_key_id=f"key{port}",
                    secret_access_key="s")
        for port, region in ((9, "us-east-1"), (10, "eu-west-1"), (11, "ap-south-1"))
    ]  # fmt: skip

    def make(i: int) -> tuple[AwsEndpoint, int, Any]:
        ep = endpoints[i % len(endpoints)]
        return ep, i, ep.client("dynamodb", connect_timeout=1 + i)

    with ThreadPoolExecutor(8) as pool:
        made = list(pool.map(make, range(24)))
    for ep, i, client in made:
        assert (client.meta.endpoint_url, client.meta.region_name) == (ep.url, ep.region)
        assert _access_key(client) == ep.access_key_id
        assert client.meta.config.connect_timeout == 1 + i


def test_default_chain_credentials_are_resolved_for_each_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_aws = AwsEndpoint(region="eu-west-1")  # no URL, no keys: the default chain
    for key in ("FIRSTKEY", "ROTATEDKEY"):
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
        assert _access_key(real_aws.client("dynamodb")) == key


EVENTS = (
    "before-parameter-build.s3.PutObject",
    "before-parse.s3.GetObject",
    "before-call.kinesis.GetRecords",
    "before-parse.kinesis.GetRecords",
    "needs-retry.dynamodb.UpdateItem",
    "after-call.dynamodb.Scan",
    "creating-client-class.s3",
    "choose-signer.cloudwatch.PutMetricData",
    "request-created.s3.PutObject",
    "before-sign.s3.PutObject",
)


def _handlers(session: Any, event: str) -> list[Any]:
    """The handlers ``event`` reaches in ``session``, in call order."""
    emitter = session.get_component("event_emitter")._emitter
    return list(emitter._handlers.prefix_search(event))


def test_each_session_has_botocore_s_builtin_handlers_as_its_own_copy() -> None:
    """Every event reaches the handlers, in the order, that ``botocore.session.Session()``
    registers; a handler added to one session reaches no other."""
    import botocore.handlers
    import botocore.session

    from streamkit.aws_sessions import fresh_session

    plain = botocore.session.Session()
    events = {*EVENTS, *(spec[0] for spec in botocore.handlers.BUILTIN_HANDLERS)}
    with fresh_session() as first:
        pass
    with fresh_session() as second:
        pass
    for event in sorted(events):
        assert _handlers(first, event) == _handlers(plain, event), event
        assert _handlers(second, event) == _handlers(plain, event), event

    def extra(**_: Any) -> None: ...

    first.register("before-call.kinesis.GetRecords", extra)
    with fresh_session() as third:
        pass
    assert extra in _handlers(first, "before-call.kinesis.GetRecords")
    for other in (second, third):
        assert extra not in _handlers(other, "before-call.kinesis.GetRecords")


def test_a_handler_added_to_botocore_s_builtin_list_later_reaches_new_sessions() -> None:
    """moto appends its request stubber to ``BUILTIN_HANDLERS`` when imported, possibly
    after streamkit made its first session: sessions made after the change carry it, as
    ``botocore.session.Session()`` does, or a mocked test would reach the real endpoint."""
    import botocore.handlers
    import botocore.session

    from streamkit.aws_sessions import fresh_session

    with fresh_session() as before:
        pass

    def stub(**_: Any) -> None: ...

    botocore.handlers.BUILTIN_HANDLERS.append(("before-send", stub))
    try:
        with fresh_session() as after:
            pass
        plain = botocore.session.Session()
    finally:
        botocore.handlers.BUILTIN_HANDLERS.remove(("before-send", stub))
    assert stub in _handlers(after, "before-send.kinesis.GetRecords")
    assert _handlers(after, "before-send.s3.PutObject") == _handlers(
        plain, "before-send.s3.PutObject"
    )
    assert stub not in _handlers(before, "before-send.kinesis.GetRecords")
    with fresh_session() as restored:
        pass
    assert stub not in _handlers(restored, "before-send.kinesis.GetRecords")

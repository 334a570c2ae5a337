"""Endpoint configuration: the process-wide default and LocalStack's own settings."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import streamkit as sk
from streamkit.config import ENDPOINT_ENV, AwsEndpoint, current_endpoint


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in (ENDPOINT_ENV, "AWS_ENDPOINT_URL", "LOCALSTACK_HOST", "USE_SSL", "AWS_REGION",
                 "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    yield
    sk.configure(None)


def test_configure_sets_and_clears_the_default() -> None:
    sk.configure("http://127.0.0.1:4599")
    assert current_endpoint().url == "http://127.0.0.1:4599"
    sk.configure(None)
    assert current_endpoint() == AwsEndpoint(url=None)


def test_environment_url_is_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENDPOINT_ENV, "http://127.0.0.1:4598")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    ep = current_endpoint()
    assert (ep.url, ep.region) == ("http://127.0.0.1:4598", "eu-west-1")
    assert ep.client_kwargs()["aws_access_key_id"] == "test"


def test_localstack_default_is_the_edge_port() -> None:
    assert AwsEndpoint.localstack() == AwsEndpoint.local("http://localhost:4566")


def test_localstack_host_and_ssl_are_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCALSTACK_HOST", "ls.internal:4777")
    monkeypatch.setenv("USE_SSL", "1")
    monkeypatch.setenv(ENDPOINT_ENV, "localstack")
    assert current_endpoint().url == "https://ls.internal:4777"
    sk.configure("localstack")
    assert current_endpoint().url == "https://ls.internal:4777"


def test_aws_endpoint_url_wins_for_localstack(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCALSTACK_HOST", "ignored:1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://10.0.0.7:4566")
    assert AwsEndpoint.localstack().url == "http://10.0.0.7:4566"
    assert AwsEndpoint.localstack(host="explicit:4510").url == "http://10.0.0.7:4566"

"""Fixtures shared by the S3 integration tests (LocalStack)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

import streamkit as sk
from streamkit.config import AwsEndpoint


@pytest.fixture
def bucket(localstack_endpoint: AwsEndpoint) -> Iterator[str]:
    """A fresh bucket, emptied and removed after the test."""
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
    sk.configure(localstack_endpoint)
    try:
        yield localstack_endpoint
    finally:
        sk.configure(None)


def s3_keys(endpoint: AwsEndpoint, bucket: str, prefix: str) -> list[str]:
    """Object keys under ``prefix``, relative to it, sorted."""
    s3 = endpoint.client("s3")
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"][len(prefix) :] for p in pages for o in p.get("Contents", []))

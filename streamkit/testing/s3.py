"""S3 helpers of the tests (the ``bucket`` fixture lives in :mod:`streamkit.testing.fixtures`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streamkit.config import AwsEndpoint


def s3_keys(endpoint: AwsEndpoint, bucket: str, prefix: str) -> list[str]:
    """Object keys under ``prefix``, relative to it, sorted."""
    s3 = endpoint.client("s3")
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"][len(prefix) :] for p in pages for o in p.get("Contents", []))

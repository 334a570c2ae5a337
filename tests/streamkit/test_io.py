"""Batch readers: Parquet and NDJSON from local paths and from S3 on LocalStack, pandas."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import streamkit as sk
from streamkit.config import AwsEndpoint
from streamkit.testing.tables import assert_table_equal
from tests.oracle.events import events


def windowed(df: sk.DataFrame) -> sk.DataFrame:
    return df.group_by(sk.window("event_time", "1 hour"), "action").agg(
        sk.count().alias("n"), sk.sum("value"), sk.approx_count_distinct("user_id")
    )


@pytest.fixture(scope="module")
def data() -> pa.Table:
    return events(n=2000, seed=11)


def test_parquet_file_and_directory(tmp_path: Path, data: pa.Table) -> None:
    pq.write_table(data, tmp_path / "one.parquet")
    parts = tmp_path / "parts"
    parts.mkdir()
    pq.write_table(data.slice(0, 700), parts / "a.parquet")
    pq.write_table(data.slice(700), parts / "b.parquet")
    expected = windowed(sk.from_arrow(data)).to_arrow()
    assert_table_equal(
        windowed(sk.read.parquet(str(tmp_path / "one.parquet"))).to_arrow(),
        expected,
        sort_by=["window", "action"],
    )
    assert_table_equal(
        windowed(sk.read.parquet(str(parts))).to_arrow(), expected, sort_by=["window", "action"]
    )
    # string keys read dictionary-encoded come back with the input's type
    out = windowed(sk.read.parquet(str(parts))).to_arrow()
    assert out.schema.field("action").type in (pa.string(), pa.large_string(), pa.string_view())


def test_ndjson_directory_with_iso_timestamps(tmp_path: Path, data: pa.Table) -> None:
    rows = data.to_pylist()
    for i, chunk in enumerate((rows[:900], rows[900:])):
        with open(tmp_path / f"part-{i}.ndjson", "w") as fh:
            for r in chunk:
                t = r["event_time"]
                r["event_time"] = t.isoformat() if t is not None else None
                fh.write(json.dumps(r) + "\n")
    df = sk.read.json(str(tmp_path)).with_column("event_time", sk.to_timestamp("event_time"))
    assert_table_equal(
        windowed(df).to_arrow(),
        windowed(sk.from_arrow(data)).to_arrow(),
        sort_by=["window", "action"],
    )


def test_from_pandas_round_trip(data: pa.Table) -> None:
    frame = data.to_pandas()
    out = sk.from_pandas(frame).group_by("action").agg(sk.count()).to_pandas()
    assert isinstance(out, pd.DataFrame)
    assert out["count"].sum() == data.num_rows


def test_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(sk.StreamkitError, match="no such file"):
        sk.read.parquet(str(tmp_path / "absent"))


@pytest.mark.integration
@pytest.mark.localstack
def test_parquet_and_json_from_s3_through_endpoint(
    localstack_endpoint: AwsEndpoint, data: pa.Table, tmp_path: Path
) -> None:
    s3 = localstack_endpoint.client("s3")
    bucket = f"sk-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    local = tmp_path / "d.parquet"
    pq.write_table(data, local)
    s3.put_object(Bucket=bucket, Key="events/part-0.parquet", Body=local.read_bytes())
    body = "\n".join(json.dumps({"k": i % 3, "v": i}) for i in range(30)).encode()
    s3.put_object(Bucket=bucket, Key="json/x.ndjson", Body=body)
    sk.configure(localstack_endpoint)
    try:
        got = windowed(sk.read.parquet(f"s3://{bucket}/events")).to_arrow()
        js = sk.read.json(f"s3://{bucket}/json").group_by("k").agg(sk.sum("v")).to_arrow()
    finally:
        sk.configure(None)
    assert_table_equal(got, windowed(sk.from_arrow(data)).to_arrow(), sort_by=["window", "action"])
    assert sorted(js.column("sum(v)").to_pylist()) == [135, 145, 155]

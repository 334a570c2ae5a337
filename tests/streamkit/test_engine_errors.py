"""Bad input gets a typed error at plan-build time that says what to do."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

import streamkit as sk
from streamkit.durations import parse_duration_ns


@pytest.fixture
def df() -> sk.DataFrame:
    t = datetime(2024, 1, 1, tzinfo=UTC)
    return sk.from_arrow(
        pa.table(
            {
                "event_time": pa.array([t, t + timedelta(minutes=1)], pa.timestamp("us", "UTC")),
                "action": ["a", "b"],
                "value": [1.0, 2.0],
                "ts_text": ["2024-01-01T00:00:00Z", "2024-01-01T00:30:00Z"],
                "epoch": [1_704_067_200, 1_704_069_000],
            }
        )
    )


def test_unknown_column_names_it_and_lists_available(df: sk.DataFrame) -> None:
    with pytest.raises(sk.ColumnNotFoundError) as err:
        df.filter(sk.col("valu") > 1)
    assert "'valu'" in str(err.value)
    for name in ("event_time", "action", "value"):
        assert repr(name) in str(err.value)


@pytest.mark.parametrize(
    "build",
    [
        lambda d: d.group_by("nope").agg(sk.count()),
        lambda d: d.select("value", "nope"),
        lambda d: d.group_by("action").agg(sk.sum("nope")),
        lambda d: d.group_by(sk.window("nope", "1 hour")).agg(sk.count()),
        lambda d: d.with_watermark("nope", "1 minute"),
    ],
)
def test_unknown_column_everywhere_is_caught_when_building(df: sk.DataFrame, build) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(sk.ColumnNotFoundError, match="'nope' not found"):
        build(df)


def test_sum_of_string_column_names_column_and_type(df: sk.DataFrame) -> None:
    with pytest.raises(sk.SchemaError, match=r"sum\(\) needs a numeric column.*'action'.*String"):
        df.group_by("event_time").agg(sk.sum("action"))
    with pytest.raises(sk.SchemaError, match=r"avg\(\)"):
        df.agg(sk.avg("action"))


def test_window_on_non_timestamp_suggests_conversion(df: sk.DataFrame) -> None:
    with pytest.raises(sk.SchemaError, match=r"timestamp column.*'value'.*Float64.*to_timestamp"):
        df.group_by(sk.window("value", "1 hour")).agg(sk.count())
    with pytest.raises(sk.SchemaError, match="session_window"):
        df.group_by(sk.session_window("action", "1 hour")).agg(sk.count())


def test_arithmetic_and_logic_type_errors(df: sk.DataFrame) -> None:
    with pytest.raises(sk.SchemaError, match="arithmetic needs numeric"):
        df.with_column("x", sk.col("action") * 2)
    with pytest.raises(sk.SchemaError, match="boolean operands"):
        df.filter(sk.col("value") & (sk.col("value") > 1))
    with pytest.raises(sk.PlanError, match="boolean condition"):
        df.filter(sk.col("value") + 1)
    with pytest.raises(TypeError, match="no truth value"):
        df.filter((sk.col("value") > 1) and (sk.col("value") < 3))


@pytest.mark.parametrize("bad", ["1 hr", "hour", "10", "ten minutes", "", "-5 minutes"])
def test_bad_durations_list_accepted_forms(bad: str) -> None:
    with pytest.raises(sk.DurationError) as err:
        sk.window("event_time", bad)
    text = str(err.value)
    if bad.strip():
        assert "'10 seconds'" in text
        assert "hour(s)/h" in text


def test_duration_forms() -> None:
    hour = 3600 * 10**9
    assert parse_duration_ns("1 hour") == hour
    assert parse_duration_ns("15 minutes") == hour // 4
    assert parse_duration_ns("10 seconds") == 10 * 10**9
    assert parse_duration_ns("1 day 2 hours") == 26 * hour
    assert parse_duration_ns(timedelta(minutes=90)) == hour * 3 // 2
    assert parse_duration_ns("500ms") == 5 * 10**8


def test_slide_larger_than_size_is_rejected() -> None:
    with pytest.raises(sk.PlanError, match="slide"):
        sk.window("event_time", "10 minutes", "1 hour")


def test_timestamp_parsing_errors_and_success(df: sk.DataFrame) -> None:
    with pytest.raises(sk.SchemaError, match="from_epoch"):
        df.with_column("t", sk.to_timestamp("epoch"))
    with pytest.raises(sk.SchemaError, match="from_epoch needs numbers"):
        df.with_column("t", sk.from_epoch("action"))
    out = (
        df.with_columns(parsed=sk.to_timestamp("ts_text"), from_num=sk.from_epoch("epoch"))
        .select("parsed", "from_num")
        .to_arrow()
    )
    assert out.column("parsed").to_pylist() == out.column("from_num").to_pylist()
    assert out.column("parsed")[1].as_py() == datetime(2024, 1, 1, 0, 30, tzinfo=UTC)
    assert out.schema.field("parsed").type == pa.timestamp("us", "UTC")


def test_empty_input_gives_empty_result_with_schema(df: sk.DataFrame) -> None:
    q = (
        df.filter(sk.col("value") > 100)
        .group_by(sk.window("event_time", "1 hour"), "action")
        .agg(sk.count().alias("n"), sk.avg("value"), sk.approx_count_distinct("action"))
    )
    out = q.to_arrow()
    assert out.num_rows == 0
    assert out.schema == q.schema
    assert out.schema.names == [
        "window",
        "action",
        "n",
        "avg(value)",
        "approx_count_distinct(action)",
    ]
    total = df.filter(sk.col("value") > 100).agg(sk.count(), sk.sum("value")).to_arrow()
    assert total.to_pylist() == [{"count": 0, "sum(value)": None}]


def test_result_schema_matches_executed_schema(df: sk.DataFrame) -> None:
    q = df.group_by(sk.session_window("event_time", "5 minutes"), "action").agg(
        sk.count(), sk.min("event_time"), sk.count_distinct("value")
    )
    assert q.to_arrow().schema == q.schema


def test_duplicate_output_names_and_empty_agg(df: sk.DataFrame) -> None:
    with pytest.raises(sk.PlanError, match="produced twice"):
        df.group_by("action").agg(sk.count(), sk.count())
    with pytest.raises(sk.PlanError, match="at least one aggregate"):
        df.group_by("action").agg()


def test_explain_shows_every_node(df: sk.DataFrame) -> None:
    text = (
        df.filter(sk.col("value") > 0)
        .with_column("v2", sk.col("value") * 2)
        .group_by(sk.window("event_time", "1 hour", "15 minutes"), "action")
        .agg(sk.sum("v2"))
        .explain()
    )
    for part in (
        "Aggregate",
        "window(col('event_time'), 1 hour, slide=15 minutes)",
        "WithColumns",
        "Filter",
        "Scan",
    ):
        assert part in text

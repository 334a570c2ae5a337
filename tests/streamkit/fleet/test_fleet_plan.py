"""Which plans a fleet runs: the split of a supported plan, stateless plans, and the
refusals, each naming the construct."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pyarrow as pa
import pytest

import streamkit as sk
from streamkit.errors import PlanError
from streamkit.fleet import AggregationStage, FleetPlan, SourceStage
from streamkit.plan import Aggregate

from .sim import SCHEMA, T0


def stream() -> sk.DataFrame:
    empty = pa.table({"k": pa.array([], pa.string()), "v": pa.array([], pa.int64()),
                      "t": pa.array([], pa.timestamp("us", "UTC"))})  # fmt: skip
    return sk.from_arrow(empty).with_watermark("t", "5 minutes")


def test_a_windowed_aggregation_splits_below_and_above() -> None:
    df = stream().filter(sk.col("v") > 0).with_column("w", sk.col("v") * 2)
    agg = df.group_by(sk.window("t", "10 minutes"), "k").agg(sk.sum("w").alias("s"))
    plan = agg.filter(sk.col("s") > 3).select("window", "s").plan
    fleet = FleetPlan.of(plan, "update")
    assert not fleet.stateless
    assert isinstance(fleet.agg, Aggregate)
    assert fleet.below is fleet.agg.input
    assert fleet.above is not None
    assert fleet.route_keys == ["k"]


def test_operations_after_the_aggregation_run_in_the_aggregation_stage() -> None:
    agg = stream().group_by(sk.window("t", "10 minutes"), "k").agg(sk.sum("v").alias("s"))
    fleet = FleetPlan.of(agg.filter(sk.col("s") > 3).select("k", "s").plan, "complete")
    rows = pl.DataFrame({"k": ["a", "a", "b"], "v": [2, 2, 1],
                         "t": [T0, T0 + timedelta(minutes=1), T0]}, schema=SCHEMA)  # fmt: skip
    source = SourceStage(fleet)
    out = source.run(rows)
    (chunks,) = source.chunks(out, "s0", None, "7", out.max_event, False, 1, "q")
    result = AggregationStage(fleet).apply(chunks, now=0).output
    assert result.to_dicts() == [{"k": "a", "s": 4}]


def test_a_plan_without_aggregation_is_stateless() -> None:
    fleet = FleetPlan.of(stream().filter(sk.col("v") > 0).select("k", "t").plan, "append")
    assert fleet.stateless
    with pytest.raises(PlanError, match="stateless"):
        SourceStage(fleet)


@pytest.mark.parametrize(
    ("build", "construct"),
    [
        (lambda df: df.join(df.select("k"), on="k"), "a join"),
        (lambda df: df.group_by("k").agg(sk.count().alias("n"))
         .group_by("n").agg(sk.count().alias("m")), "a stateful operator over an aggregation"),
        (lambda df: df.drop_duplicates(["k"]).drop_duplicates(["k", "v"]),
         "a stateful operator over another, other than one aggregation over drop_dup"),
        (lambda df: df.drop_duplicates(["k"]).group_by("v").agg(sk.count().alias("n")),
         r"drop_duplicates on \['k'\] then an aggregation grouped by 'v'"),
    ],
)  # fmt: skip
def test_unsupported_constructs_are_refused_by_name(build: object, construct: str) -> None:
    with pytest.raises(PlanError, match=f"not supported on a fleet yet: {construct}"):
        FleetPlan.of(build(stream()).plan, "update")  # type: ignore[operator]


def test_what_the_single_process_engine_refuses_is_refused_too() -> None:
    agg = stream().group_by(sk.session_window("t", "5 minutes"), "k").agg(sk.count())
    with pytest.raises(PlanError, match="update mode is not supported for session windows"):
        FleetPlan.of(agg.plan, "update")


def test_a_key_type_the_routing_cannot_encode_is_refused() -> None:
    df = stream().with_column("l", sk.col("v"))
    plan = df.group_by("k").agg(sk.count().alias("n")).plan
    FleetPlan.of(plan, "update")  # an int key is fine
    listed = pa.table({"l": pa.array([], pa.list_(pa.int64())), "v": pa.array([], pa.int64())})
    with pytest.raises(PlanError, match="group key 'l'"):
        FleetPlan.of(sk.from_arrow(listed).group_by("l").agg(sk.count()).plan, "update")

"""Fractional durations ("0.5 seconds") are exact; what cannot be parsed says what can."""

from __future__ import annotations

import pyarrow as pa
import pytest

import streamkit as sk
from streamkit.durations import parse_duration_ns
from streamkit.streaming.sources.memory import MemoryStream


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("0.5 seconds", 500_000_000),
        ("1.5 hours", 5_400 * 10**9),
        (".25 s", 250_000_000),
        ("2.5ms", 2_500_000),
        ("1 minute 0.5 seconds", 60_500_000_000),
        ("0.1 s", 100_000_000),
    ],
)
def test_fractional_durations_are_exact(text: str, ns: int) -> None:
    assert parse_duration_ns(text) == ns


@pytest.mark.parametrize("bad", ["0.5", "1.2.3 s", "0.0 s", "- 0.5 s", "0.5 parsecs"])
def test_malformed_fractions_list_the_accepted_forms(bad: str) -> None:
    with pytest.raises(sk.DurationError, match=r"'0\.5 seconds'|must be positive"):
        parse_duration_ns(bad)


def test_a_fraction_of_a_nanosecond_is_refused() -> None:
    with pytest.raises(sk.DurationError, match="whole number of nanoseconds"):
        parse_duration_ns("0.0000000001 s")


def test_a_processing_time_trigger_of_half_a_second_runs() -> None:
    stream = MemoryStream(pa.schema([("id", pa.int64())]))
    stream.add_rows([{"id": 1}])
    df = sk.read_stream.source(stream)
    q = df.write_stream.trigger(processing_time="0.5 seconds").memory("half_second").start()
    try:
        q.process_all_available(timeout=60)
    finally:
        q.stop()
    assert q.trigger.interval == 0.5
    assert sk.memory_table("half_second").to_pylist() == [{"id": 1}]

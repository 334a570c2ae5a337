"""Hostile records (deeply nested, not UTF-8) become dead letters; nothing crashes.

pyarrow's JSON reader segfaults on a record nested ~50k levels deep; these tests run the
dangerous inputs in a child process, so a crash fails the test instead of the session.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pytest

from streamkit.errors import ConfigError
from streamkit.streaming.decode import JsonDecoder, Positions, RawRecords

FUZZ = Path(__file__).with_name("fuzz_decode.py")
NOT_UTF8 = b'{"page": "vi\xff\xfeew", "n": 1}'


def records(payloads: list[bytes]) -> RawRecords:
    return RawRecords.from_partition(payloads, "p", Positions(range(len(payloads))))


def run_child(code: str, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args] if not code else [sys.executable, "-c", code, *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_fuzzed_batches_never_crash_the_decoder_or_inference() -> None:
    """Hypothesis over inference + decoding (with the 50k-deep and non-UTF-8 examples), in a
    child process: a SIGSEGV shows up as a negative return code here."""
    done = run_child("", str(FUZZ), "150")
    assert done.returncode == 0, f"fuzz child exited {done.returncode}:\n{done.stderr[-3000:]}"
    assert "fuzz: ok" in done.stdout


@pytest.mark.parametrize("head", ["list", "object"])
def test_deep_record_at_the_head_of_a_file_stream_is_a_dead_letter(
    tmp_path: Path, head: str
) -> None:
    """The original crash: a 50k-deep record first in the first file, schema inferred."""
    deep = (
        "b'[' * 50_000 + b']' * 50_000"
        if head == "list"
        else ("b'{\"a\":' * 50_000 + b'1' + b'}' * 50_000")
    )
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        import streamkit as sk
        folder = Path(sys.argv[1])
        (folder / "in").mkdir()
        (folder / "in" / "a.json").write_bytes({deep} + b"\\n" + b'{{"a": 1}}\\n')
        q = (sk.read_stream.files(str(folder / "in")).write_stream
             .trigger(available_now=True).checkpoint(str(folder / "ck"))
             .query_name("hostile").memory().start())
        assert q.await_termination(timeout=60)
        print("rows", sk.memory_table("hostile").to_pylist())
        print("dead", q.dead_letters.column("reason").to_pylist())
    """)
    done = run_child(code, str(tmp_path))
    assert done.returncode == 0, f"child exited {done.returncode}:\n{done.stderr[-3000:]}"
    assert "rows [{'a': 1}]" in done.stdout
    assert "dead ['nested deeper than 64 levels']" in done.stdout


def test_a_non_utf8_record_alone_is_a_dead_letter_not_an_exception() -> None:
    for infer_first in (False, True):
        decoder = JsonDecoder()
        if infer_first:
            assert decoder.infer_schema([NOT_UTF8]) is None
        rows, dead = decoder.decode(records([NOT_UTF8]))
        assert rows.num_rows == 0
        assert dead.column("reason").to_pylist() == ["invalid UTF-8: byte 0xff at offset 12"]


def test_inference_skips_hostile_records_and_uses_the_good_ones() -> None:
    deep = b'{"a":' * 70 + b"1" + b"}" * 70
    decoder = JsonDecoder()
    schema = decoder.infer_schema([deep, NOT_UTF8, b'{"n": 2}'])
    assert schema == pa.schema([("n", pa.int64())])


def test_depth_bound_is_exact_and_ignores_brackets_inside_strings() -> None:
    at_limit = b'{"x":' + b"[" * 63 + b"]" * 63 + b"}"
    over = b'{"x":' + b"[" * 64 + b"]" * 64 + b"}"
    in_string = b'{"x": "' + b"[{" * 500 + b'\\"[["}'
    decoder = JsonDecoder(pa.schema([("n", pa.int64())]))
    rows, dead = decoder.decode(records([at_limit, over, in_string]))
    assert rows.num_rows == 2
    assert dead.column("position").to_pylist() == ["1"]
    assert dead.column("reason").to_pylist() == ["nested deeper than 64 levels"]
    _, dead = JsonDecoder(max_depth=200).decode(records([over]))
    assert dead.num_rows == 0
    with pytest.raises(ConfigError, match="max_depth"):
        JsonDecoder(max_depth=0)


def test_a_file_document_screens_every_line_before_the_in_place_parse() -> None:
    decoder = JsonDecoder(pa.schema([("page", pa.string()), ("n", pa.int64())]))
    doc = b'{"page": "home", "n": 0}\n' + NOT_UTF8 + b"\n" + b"[" * 100 + b"]" * 100 + b"\n"
    rows, dead = decoder.decode_lines(doc, "files", "f.json")
    assert rows.to_pylist() == [{"page": "home", "n": 0}]
    assert dict(zip(dead["position"].to_pylist(), dead["reason"].to_pylist(), strict=True)) == {
        "f.json:2": "invalid UTF-8: byte 0xff at offset 12",
        "f.json:3": "nested deeper than 64 levels",
    }

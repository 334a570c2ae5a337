"""The windowed-counts plot: a real PNG, decoded and checked (size, not blank, one
coloured line per key), and ``streamkit run --plot`` end to end on LocalStack."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pytest
from matplotlib import rcParams
from matplotlib.colors import to_rgb
from PIL import Image

from streamkit.cli._common import CliError
from streamkit.cli.plot import DPI, SIZE, plot_window_counts

from .conftest import Cli, unique

if TYPE_CHECKING:
    from pathlib import Path

    from streamkit.config import AwsEndpoint

WIDTH, HEIGHT = int(SIZE[0] * DPI), int(SIZE[1] * DPI)


def counts_table(actions: list[str], windows: int) -> pa.Table:
    """Window-count rows shaped like a streaming result: window struct, action, events."""
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    starts = [t0 + timedelta(minutes=m) for m in range(windows) for _ in actions]
    window = pa.StructArray.from_arrays(
        [pa.array(starts, pa.timestamp("us", "UTC")),
         pa.array([s + timedelta(minutes=1) for s in starts], pa.timestamp("us", "UTC"))],
        names=["start", "end"],
    )  # fmt: skip
    events = [10 * (i + 1) + m for m in range(windows) for i in range(len(actions))]
    return pa.table({"window": window, "action": actions * windows, "events": events})


def pixels(path: Path) -> np.ndarray:
    """The decoded PNG as an (height, width, 3) uint8 array."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def line_colours(n: int) -> list[tuple[int, int, int]]:
    """The first ``n`` colours of matplotlib's default cycle, as 8-bit RGB."""
    cycle = rcParams["axes.prop_cycle"].by_key()["color"][:n]
    return [tuple(round(255 * c) for c in to_rgb(hex_)) for hex_ in cycle]  # type: ignore[misc]


def colours_present(image: np.ndarray) -> set[tuple[int, int, int]]:
    flat = image.reshape(-1, 3)
    return {(int(r), int(g), int(b)) for r, g, b in np.unique(flat, axis=0)}


def test_png_has_the_size_and_one_coloured_line_per_action(tmp_path: Path) -> None:
    actions = ["view", "click", "purchase"]
    out = plot_window_counts(counts_table(actions, windows=5), tmp_path / "counts.png")
    image = pixels(out)
    assert image.shape == (HEIGHT, WIDTH, 3)
    assert image.std() > 0
    present = colours_present(image)
    assert len(present) > 10
    assert set(line_colours(len(actions))) <= present
    # a fourth line colour was not drawn: there are three actions
    assert line_colours(4)[3] not in present


def test_window_start_columns_and_an_explicit_value_column(tmp_path: Path) -> None:
    table = counts_table(["a", "b"], windows=3)
    flat = pa.table({
        "window_start": table["window"].combine_chunks().field("start"),
        "action": table["action"], "n": table["events"], "other": table["events"],
    })  # fmt: skip
    image = pixels(plot_window_counts(flat, tmp_path / "flat.png", value="other"))
    assert image.shape == (HEIGHT, WIDTH, 3)
    assert set(line_colours(2)) <= colours_present(image)


def test_a_table_without_windows_is_refused_with_a_hint(tmp_path: Path) -> None:
    with pytest.raises(CliError, match="no window column") as info:
        plot_window_counts(pa.table({"action": ["a"], "n": [1]}), tmp_path / "x.png")
    assert "sk.window" in str(info.value.hint)
    assert not (tmp_path / "x.png").exists()


JOB = """
import streamkit as sk
from streamkit.cli.clickstream import SCHEMA

def job():
    df = sk.read_stream.kinesis({stream!r}, {app!r}, schema=SCHEMA,
                                consumer_options={{"idle_time": 0.1, "take_interval": 0.5}})
    counts = df.group_by(sk.window("event_time", "1 second"), "action").agg(
        sk.count().alias("events"))
    return counts.write_stream.output_mode("complete").memory({table!r})
"""


@pytest.mark.integration
def test_run_available_now_with_plot(localstack_endpoint: AwsEndpoint, tmp_path: Path) -> None:
    cli = Cli(localstack_endpoint)
    stream = unique("cli-plot")
    assert cli("stream", "create", stream, "--shards", "2").exit_code == 0
    assert cli("produce", stream, "--count", "600").exit_code == 0
    job = tmp_path / "job.py"
    table = unique("plot_mem").replace("-", "_")
    job.write_text(JOB.format(stream=stream, app=unique("app"), table=table))
    png = tmp_path / "plots" / "counts.png"
    # available_now stops at the end every shard had when the query started: all 600 rows
    result = cli("run", str(job), "--available-now", "--plot", str(png))
    assert result.exit_code == 0, result.output
    assert "600 input row(s)" in result.output
    assert f"plot: {png}" in result.output.replace("\n", "")
    image = pixels(png)
    assert image.shape == (HEIGHT, WIDTH, 3)
    assert image.std() > 0
    # six actions in the clickstream: six lines
    assert set(line_colours(6)) <= colours_present(image)

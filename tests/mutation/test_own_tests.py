"""`make mutation` runs a mutant against its own module's tests only (mutmut_main item 7):
the mutated file is found from the mutant's name, and a test is kept when its file lies
in one of that module's test paths."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pathlib import Path

MODULES = [
    {"files": ["streamkit/aggregate.py", "streamkit/aggregates/sums.py"], "tests": ["tests/a"]},
    {
        "files": ["streamkit/streaming/state/keyed.py", "streamkit/streaming/state/__init__.py"],
        "tests": ["tests/s/test_k.py", "tests/s/state/"],
    },
]


@pytest.fixture
def main(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """mutmut_main, imported where mutmut finds a configuration (it reads one on import)."""
    (tmp_path / "setup.cfg").write_text("[mutmut]\nsource_paths = streamkit\n")
    monkeypatch.chdir(tmp_path)
    return import_module("tests.mutation.mutmut_main")


def test_a_mutant_maps_to_the_tests_of_the_file_it_mutates(main: Any) -> None:
    own_tests = main.own_tests
    by_dotted = main.tests_by_module(MODULES)
    keyed = "streamkit.streaming.state.keyed.xǁKeyedStoreǁ_file__mutmut_3"
    assert own_tests(keyed, by_dotted) == ("tests/s/test_k.py", "tests/s/state/")
    assert own_tests("streamkit.streaming.state.x_merge__mutmut_1", by_dotted) == (
        "tests/s/test_k.py",
        "tests/s/state/",
    )  # the package's __init__.py
    # aggregate.py and the aggregates package are different files: no prefix confusion
    assert own_tests("streamkit.aggregate.x_merge__mutmut_2", by_dotted) == ("tests/a",)
    assert own_tests("streamkit.aggregates.sums.x_add__mutmut_9", by_dotted) == ("tests/a",)
    assert own_tests("streamkit.aggregates.means.x_add__mutmut_9", by_dotted) is None
    assert own_tests("streamkit.windows.x_tumble__mutmut_1", by_dotted) is None


def test_a_test_is_kept_when_its_file_is_in_one_of_the_paths(main: Any) -> None:
    in_paths = main.in_paths
    paths = ("tests/s/test_k.py", "tests/s/state/", "tests/parity")
    assert in_paths("tests/s/test_k.py::test_one[a-b]", paths)
    assert in_paths("tests/s/state/test_x.py::test_two", paths)
    assert in_paths("tests/parity/deep/test_p.py::C::test", paths)
    assert not in_paths("tests/s/test_k2.py::test_one", paths)  # a longer file name
    assert not in_paths("tests/parity_more/test_p.py::test", paths)  # a longer folder name
    assert not in_paths("tests/s/test_state.py::test", paths)

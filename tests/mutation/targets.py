"""What `make mutation` mutates, and which server-free tests may kill each mutant.

A :class:`Group` is one mutmut run: one importable package copied into a scratch folder
(``.cache/mutation/<group>``), some of its files mutated, one pytest selection. Modules are
scored separately; mutmut runs, for each mutant, only the tests that executed the mutated
function during its stats pass.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Module:
    """One scored unit: a name and the files (relative to the package root) it covers."""

    name: str
    files: tuple[str, ...]
    tests: tuple[str, ...]
    """Test paths (relative to the package root) for a run of this module alone."""


@dataclass(frozen=True)
class Group:
    """One mutmut run over ``package`` (a folder under ``root``, both repo-relative)."""

    name: str
    root: str
    package: str
    tests_dir: str
    """Folder of the tests (relative to ``root``), copied next to the package."""
    modules: tuple[Module, ...]
    pytest_args: tuple[str, ...]

    def tests(self) -> tuple[str, ...]:
        """The union of the modules' selections, in first-seen order."""
        return tuple(dict.fromkeys(t for m in self.modules for t in m.tests))


NOT_MUTATED = (
    r"raise \w+\(",
    r"^\s*(f|rf|fr)?\"[^\"]*\"\s*\)?,?\s*$",
    r"\b(log\.(debug|info|warning|error|exception)|warnings\.warn)\(",
)
"""Lines left unmutated: the text of error messages and log records (a ``raise X(`` line and
the string-only lines continuing it), not the conditions that raise or log. Their wording
is checked by key phrase elsewhere; an ``"XX" + text + "XX"`` mutant of it says nothing
about the engine."""

DESELECT: tuple[str, ...] = ()
"""Test ids failing on main without any mutant, left out of the selection (mutmut refuses
to start on a red suite); name each with the commit that broke it, and empty it again."""

_STREAMING = "tests/streamkit/streaming"
_ENGINE_TESTS = (
    f"{_STREAMING}/test_query.py",
    f"{_STREAMING}/test_watermark_restart.py",
    f"{_STREAMING}/test_watermark_column.py",
    f"{_STREAMING}/test_exact_replay.py",
    "tests/parity",
    "tests/streamkit/test_mutation_kills_engine.py",
)

ENGINE = Group(
    name="engine",
    root=".",
    package="streamkit",
    tests_dir="tests",
    modules=(
        Module(
            "incremental",
            ("streamkit/streaming/incremental.py", "streamkit/streaming/output_modes.py"),
            (
                *_ENGINE_TESTS,
                f"{_STREAMING}/test_stateful_ops.py",
                f"{_STREAMING}/test_partition_watermark_engine.py",
                f"{_STREAMING}/test_spark_rules.py",
                f"{_STREAMING}/test_chain.py",
                f"{_STREAMING}/test_watermark_input.py",
                "tests/streamkit/test_dedup_plan.py",
                "tests/streamkit/test_mutation_kills_incremental.py",
                f"{_STREAMING}/test_late_rows_reach_operator.py",
                f"{_STREAMING}/test_transform_state.py",
                f"{_STREAMING}/test_transform_chain.py",
                # a group key carrying the watermark, above and below other operators
                f"{_STREAMING}/test_watermark_key.py",
                f"{_STREAMING}/test_watermark_above.py",
                f"{_STREAMING}/test_watermark_key_chains.py",
                f"{_STREAMING}/test_window_struct_chains.py",
            ),
        ),
        Module(
            "watermark_input",
            ("streamkit/streaming/watermark_input.py",),
            (
                f"{_STREAMING}/test_watermark_input.py",
                f"{_STREAMING}/test_watermark_column.py",
                f"{_STREAMING}/test_partition_watermark_engine.py",
                "tests/streamkit/test_mutation_kills_watermark_input.py",
                f"{_STREAMING}/test_late_rows_reach_operator.py",
            ),
        ),
        Module(
            "state_store",
            tuple(
                f"streamkit/streaming/state/{name}.py"
                for name in ("keyed", "indexed", "hash_index", "row_log", "changelog", "by_slot")
            ),
            (f"{_STREAMING}/state", "tests/streamkit/test_mutation_kills_state_store.py"),
        ),
        Module(
            "watermark_lineage",
            ("streamkit/streaming/watermark_lineage.py",),
            (
                f"{_STREAMING}/test_watermark_above.py",
                f"{_STREAMING}/test_watermark_key.py",
                f"{_STREAMING}/test_watermark_column.py",
                f"{_STREAMING}/test_late_rows_reach_operator.py",
                "tests/streamkit/fleet/test_fleet_watermark_above.py",
                "tests/streamkit/test_mutation_kills_watermark_lineage.py",
            ),
        ),
        Module(
            "checkpoint",
            ("streamkit/streaming/checkpoint.py", "streamkit/streaming/_envelope.py"),
            (
                f"{_STREAMING}/test_checkpoint_damage.py",
                f"{_STREAMING}/test_checkpoint_store.py",
                f"{_STREAMING}/state",
                f"{_STREAMING}/test_exact_replay.py",
                f"{_STREAMING}/test_watermark_restart.py",
                "tests/streamkit/test_mutation_kills_checkpoint.py",
            ),
        ),
        Module(
            "windows",
            ("streamkit/windows.py",),
            (
                "tests/streamkit/test_windows.py",
                f"{_STREAMING}/test_watermark_restart.py",
                "tests/parity",
                "tests/streamkit/test_mutation_kills_windows.py",
                # key_end: a group key carrying the watermark (a timestamp or window struct)
                f"{_STREAMING}/test_watermark_key.py",
                f"{_STREAMING}/test_window_struct_chains.py",
            ),
        ),
        Module(
            "watermarks",
            ("streamkit/streaming/watermarks.py",),
            (
                f"{_STREAMING}/test_partition_watermarks.py",
                "tests/streamkit/test_mutation_kills_watermarks.py",
                *_ENGINE_TESTS,
            ),
        ),
        Module(
            "aggregate",
            ("streamkit/aggregate.py", "streamkit/aggregates/*"),
            (
                "tests/streamkit/aggregates",
                "tests/oracle",
                "tests/parity",
                f"{_STREAMING}/test_watermark_restart.py",
                "tests/streamkit/test_mutation_kills_aggregates.py",
                # partial(..., last_rows): a fleet's late-row count for sliding windows
                "tests/streamkit/fleet/test_fleet_late_rows.py",
            ),
        ),
    ),
    pytest_args=(
        "-m",
        "not integration",
        "-p",
        "no:cacheprovider",
        "--hypothesis-seed=0",
        *(f"--deselect={t}" for t in DESELECT),
    ),
)

_LEASE_TESTS = ("streamkit_kinesis_tests/leases",)

LEASES = Group(
    name="leases",
    root="connectors/kinesis",
    package="streamkit_kinesis",
    tests_dir="streamkit_kinesis_tests",
    modules=tuple(
        Module(name, (f"streamkit_kinesis/leases/{name}.py",), _LEASE_TESTS)
        for name in ("taker", "renewer", "checkpointer")
    ),
    pytest_args=("-m", "not integration", "-p", "no:cacheprovider", "--hypothesis-seed=0"),
)

GROUPS = (LEASES, ENGINE)

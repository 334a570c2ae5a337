"""``streamkit run job.py --workers N``, run as a real process with real worker children:
distinct worker ids, whole output lines prefixed ``[worker-k]``, Ctrl-C / SIGTERM passed to
every worker, the first failing worker's exit code, a worker killed by a signal named.
What each worker does is set per worker through ``$STUB_PLAN`` (:mod:`fleet_stub_job`)."""

from __future__ import annotations

import re
import signal

import pytest
from typer.testing import CliRunner

from streamkit.cli.main import app

from .fleet_procs import STUB_JOB, Proc

pytestmark = pytest.mark.timeout(240)

ENV_LINE = re.compile(r"^\[worker-(\d)\] env STREAMKIT_FLEET=1 STREAMKIT_WORKER_ID=(\S+) pid=\d+$")


def test_three_workers_with_distinct_ids_and_prefixed_lines() -> None:
    p = Proc("run", str(STUB_JOB), "--workers", "3", "--timeout", "0.5")
    assert p.finish() == 0, p.text
    ids = {int(m[1]): m[2] for line in p.out if (m := ENV_LINE.match(line))}
    assert sorted(ids) == [1, 2, 3], p.text
    assert len(set(ids.values())) == 3
    for k, wid in ids.items():
        assert wid.endswith(f"-{k}")
        # the worker's own prefix inside the fleet's; --timeout reached every worker
        assert f"[worker-{k}] [{wid}] stopped stub: 1 batch(es), 3 input row(s)" in p.out
        assert re.search(rf"^worker-{k} \({re.escape(wid)}, pid \d+\): exit 0$",
                         "\n".join(p.err), re.MULTILINE), p.text  # fmt: skip
    assert all(re.match(r"\[worker-\d\] ", line) for line in p.out), p.text  # no torn lines


def test_exit_code_is_the_first_failing_workers() -> None:
    # worker-2 fails at once with 3; worker-1 fails with 7 later, when its timeout stops it
    p = Proc("run", str(STUB_JOB), "--workers", "3", "--timeout", "2",
             env={"STUB_PLAN": "2=exit:3,1=stopfail:7"})  # fmt: skip
    assert p.finish() == 3, p.text
    assert "[worker-2] exiting 3" in p.err
    ends = [line for line in p.err if re.match(r"worker-\d \(", line)]
    codes = [e.split(":")[-1].strip() for e in ends]
    assert codes[0] == "exit 3", p.text  # worker-1 and worker-3 end in either order
    assert sorted(codes[1:]) == ["exit 0", "exit 7"], p.text


def test_a_worker_killed_by_a_signal_is_named() -> None:
    p = Proc("run", str(STUB_JOB), "--workers", "2", "--timeout", "1",
             env={"STUB_PLAN": "2=kill:SIGKILL"})  # fmt: skip
    assert p.finish() == 128 + 9, p.text
    assert any(re.match(r"worker-2 \(\S+, pid \d+\): killed by SIGKILL$", e) for e in p.err), p.text


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_reaches_every_worker(sig: signal.Signals, code: int) -> None:
    p = Proc("run", str(STUB_JOB), "--workers", "3")  # no timeout: runs until signalled
    p.wait_for("] batch 0:", count=3)
    p.proc.send_signal(sig)
    assert p.finish() == code, p.text
    for k in (1, 2, 3):
        assert f"[worker-{k}] stop called" in p.out, p.text
        assert any(re.match(rf"worker-{k} \(.*\): exit {code}$", e) for e in p.err), p.text


def test_workers_refuse_single_process_options() -> None:
    out = CliRunner().invoke(app, ["run", str(STUB_JOB), "--workers", "2", "--ui-port", "0"])
    assert out.exit_code == 2
    assert "--plot and --ui-port need a single process" in out.output

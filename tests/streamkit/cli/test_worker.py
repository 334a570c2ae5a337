"""``streamkit worker job.py``, run as a real process: it sets ``STREAMKIT_FLEET=1`` and
``STREAMKIT_WORKER_ID`` (``--worker-id``, ``$STREAMKIT_WORKER_ID``, else
``<hostname>-<pid>``), runs the job as ``streamkit run`` does with each line prefixed by the
worker id, and stops it gracefully on SIGINT (130) and SIGTERM (143). The job is a stub
(:mod:`fleet_stub_job`): what it prints is what the worker's environment holds."""

from __future__ import annotations

import signal
import socket

import pytest

from .fleet_procs import STUB_JOB, Proc

pytestmark = pytest.mark.timeout(180)


def test_worker_sets_the_fleet_variables_and_prefixes_its_output() -> None:
    p = Proc("worker", str(STUB_JOB), "--worker-id", "node-7", "--timeout", "0.5")
    assert p.finish() == 0, p.text
    assert p.out[0] == f"env STREAMKIT_FLEET=1 STREAMKIT_WORKER_ID=node-7 pid={p.proc.pid}"
    assert f"[node-7] running stub from {STUB_JOB}" in p.out
    assert any(line.startswith("[node-7] batch 0: 3 rows") for line in p.out), p.text
    assert p.out[-2:] == ["stop called", "[node-7] stopped stub: 1 batch(es), 3 input row(s)"]


def test_default_worker_id_is_hostname_and_pid() -> None:
    p = Proc("worker", str(STUB_JOB), "--timeout", "0.3", drop=("STREAMKIT_WORKER_ID",))
    assert p.finish() == 0, p.text
    wid = f"{socket.gethostname()}-{p.proc.pid}"
    assert p.out[0] == f"env STREAMKIT_FLEET=1 STREAMKIT_WORKER_ID={wid} pid={p.proc.pid}"
    assert f"[{wid}] stopped stub: 1 batch(es), 3 input row(s)" in p.out
    pod = Proc("worker", str(STUB_JOB), "--timeout", "0.3", env={"STREAMKIT_WORKER_ID": "pod-3"})
    assert pod.finish() == 0, pod.text
    assert pod.out[0].startswith("env STREAMKIT_FLEET=1 STREAMKIT_WORKER_ID=pod-3 ")


@pytest.mark.parametrize(
    ("sig", "code", "word"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")],
)
def test_a_signal_stops_the_job_gracefully(sig: signal.Signals, code: int, word: str) -> None:
    p = Proc("worker", str(STUB_JOB), "--worker-id", "w1")
    p.wait_for("[w1] batch 0:")
    p.proc.send_signal(sig)
    assert p.finish() == code, p.text
    assert "stop called" in p.out  # the query was stopped, not abandoned
    assert p.err == [word], p.text


def test_worker_usage_errors() -> None:
    blank = Proc("worker", str(STUB_JOB), "--worker-id", "a b")
    assert blank.finish() == 2, blank.text
    assert "worker id 'a b' is empty or has blanks" in blank.text
    missing = Proc("worker", "no-such-job.py", "--worker-id", "w")
    assert missing.finish() == 1
    assert "no such job file: no-such-job.py" in missing.text
    both = Proc("worker", str(STUB_JOB), "--available-now", "--until-idle", "1")
    assert both.finish() == 2
    started = Proc("worker", str(STUB_JOB), "--available-now", "--worker-id", "w")
    assert started.finish() == 1
    assert "--available-now needs job() to return the writer" in started.text
    assert "stop called" in started.out


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_handle_without_progress_that_takes_signals(sig: signal.Signals, code: int) -> None:
    """As the fleet member's handle: only start and end are printed, and the CLI's exit
    codes hold although the handle installed its own signal handlers at start."""
    p = Proc("worker", str(STUB_JOB), "--worker-id", "m1", env={"STUB_PLAN": "*=bare"})
    p.wait_for("[m1] running bare from")
    p.proc.send_signal(sig)
    assert p.finish() == code, p.text
    assert "stop called" in p.out
    assert not any("handle got signal" in line for line in p.out), p.text
    ended = Proc("worker", str(STUB_JOB), "--worker-id", "m2", "--timeout", "0.3",
                 env={"STUB_PLAN": "*=bare"})  # fmt: skip
    assert ended.finish() == 0, ended.text
    assert ended.out[-2:] == ["stop called", "[m2] stopped bare"]
    idle = Proc("worker", str(STUB_JOB), "--worker-id", "m3", "--until-idle", "1",
                env={"STUB_PLAN": "*=bare"})  # fmt: skip
    assert idle.finish() == 1, idle.text
    assert "--until-idle needs a query that reports its batches; BareQuery does not" in idle.text
    assert "stop called" in idle.out


def test_worker_serves_the_ui_when_asked() -> None:
    p = Proc("worker", str(STUB_JOB), "--worker-id", "w2", "--ui-port", "0", "--timeout", "0.5")
    assert p.finish() == 0, p.text
    assert any(line.startswith("web UI: http://127.0.0.1:") for line in p.out), p.text
    assert "[w2] stopped stub: 1 batch(es), 3 input row(s)" in p.out


def test_worker_serves_the_metrics_when_asked() -> None:
    """``--metrics-port`` serves (scraped in tests/streamkit/metrics/test_fleet_metrics.py)."""
    p = Proc("worker", str(STUB_JOB), "--worker-id", "w3", "--metrics-port", "0",
             "--timeout", "0.5")  # fmt: skip
    assert p.finish() == 0, p.text
    assert any(line.startswith("metrics: http://127.0.0.1:") for line in p.out), p.text
    assert "[w3] stopped stub: 1 batch(es), 3 input row(s)" in p.out

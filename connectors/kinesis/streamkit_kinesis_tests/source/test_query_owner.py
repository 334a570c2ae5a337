"""Two copies of one job, as separate OS processes on LocalStack (issue 12, item 5):
the same checkpoint folder, separate folders on one app name, one worker id twice. The
second live copy is refused at start naming the first; a dead one is taken over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from streamkit_kinesis.testing.streams import fresh_stream, unique

if TYPE_CHECKING:
    from collections.abc import Iterator

    from streamkit.config import AwsEndpoint

pytestmark = [pytest.mark.integration, pytest.mark.localstack]

JOB = Path(__file__).with_name("owner_job_proc.py")


class Job:
    """The job as a subprocess; ``first_line`` waits for ``started`` / ``refused ...``."""

    def __init__(self, endpoint: AwsEndpoint, stream: str, app: str, worker: str, ck: str,
                 *extra: str) -> None:  # fmt: skip
        args = ["--endpoint", str(endpoint.url), "--stream", stream, "--app", app,
                "--worker-id", worker, "--checkpoint", ck, *extra]  # fmt: skip
        self.proc = subprocess.Popen(
            [sys.executable, str(JOB), *args], stdout=subprocess.PIPE, text=True
        )

    def first_line(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def rest(self, timeout: float = 60) -> tuple[int, str]:
        out, _ = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)


@pytest.fixture
def jobs() -> Iterator[list[Job]]:
    started: list[Job] = []
    yield started
    for job in started:
        job.kill()


async def test_same_checkpoint_folder_second_copy_refused_then_takes_over_a_dead_one(
    localstack_endpoint: AwsEndpoint, bucket: str, jobs: list[Job]
) -> None:
    async with fresh_stream(localstack_endpoint, 2, "own") as (stream, _):
        app, ck = unique("own-app"), f"s3://{bucket}/ck"

        def job(worker: str, *extra: str) -> Job:
            jobs.append(Job(localstack_endpoint, stream, app, worker, ck, *extra))
            return jobs[-1]

        first = job("w1")
        assert first.first_line() == "started"
        second = job("w2")
        line = second.first_line()
        assert line.startswith("refused QueryAlreadyRunningError checkpoint folder " + ck)
        assert f"pid {first.proc.pid} on host" in line
        assert "force=True" in line
        assert second.rest()[0] == 3
        first.kill()  # kill -9: no release; same machine, pid gone: taken over at once
        third = job("w3")
        assert third.first_line() == "started"
        third.proc.send_signal(signal.SIGTERM)
        assert third.rest()[0] == 0
        s3 = localstack_endpoint.client("s3")
        owner = json.loads(s3.get_object(Bucket=bucket, Key="ck/owner")["Body"].read())
        assert owner["released"]  # a clean stop releases: the next start takes it at once
        assert owner["pid"] == third.proc.pid


async def test_separate_checkpoint_folders_on_one_app_refused_unless_forced(
    localstack_endpoint: AwsEndpoint, tmp_path: Path, jobs: list[Job]
) -> None:
    async with fresh_stream(localstack_endpoint, 2, "own") as (stream, _):
        app = unique("own-app")

        def job(worker: str, ck: str, *extra: str) -> Job:
            jobs.append(Job(localstack_endpoint, stream, app, worker, ck, *extra))
            return jobs[-1]

        first = job("w1", str(tmp_path / "ck1"))
        assert first.first_line() == "started"
        second = job("w2", str(tmp_path / "ck2"))
        line = second.first_line()
        assert line.startswith(f"refused AppInUseError Kinesis app {app!r} is in use by")
        assert f"pid {first.proc.pid} on host" in line
        assert str(tmp_path / "ck1") in line  # names the other query's checkpoint
        assert second.rest()[0] == 3
        forced = job("w2", str(tmp_path / "ck2"), "--force")
        assert forced.first_line() == "started"
        code, out = first.rest()  # its heartbeat finds the app taken over: it stops
        assert code == 4
        assert out.startswith("failed OwnerLostError")
        forced.proc.send_signal(signal.SIGTERM)
        assert forced.rest()[0] == 0


async def test_same_worker_id_in_two_live_processes_refused(
    localstack_endpoint: AwsEndpoint, tmp_path: Path, jobs: list[Job]
) -> None:
    async with fresh_stream(localstack_endpoint, 2, "own") as (stream, _):
        app = unique("own-app")
        first = Job(localstack_endpoint, stream, app, "same", str(tmp_path / "a"))
        jobs.append(first)
        assert first.first_line() == "started"
        second = Job(localstack_endpoint, stream, app, "same", str(tmp_path / "b"))
        jobs.append(second)
        line = second.first_line()
        assert line.startswith(
            f"refused DuplicateWorkerIdError worker id 'same' of Kinesis app {app!r}"
        )
        assert f"pid {first.proc.pid} on host" in line
        assert second.rest()[0] == 3
        first.proc.send_signal(signal.SIGTERM)  # clean stop: released
        assert first.rest()[0] == 0
        again = Job(localstack_endpoint, stream, app, "same", str(tmp_path / "b"))
        jobs.append(again)
        assert again.first_line() == "started"
        assert os.path.exists(tmp_path / "b" / "owner")

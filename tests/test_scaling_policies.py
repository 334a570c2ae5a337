"""The scaling policies under docs/scaling/ are well-formed and scale on the series streamkit
really exports: the KEDA ScaledObjects (YAML, KEDA's required trigger fields, string
metadata as KEDA wants) and the ECS target-tracking policy (checked against botocore's model
of Application Auto Scaling's ``PutScalingPolicy`` / ``RegisterScalableTarget``); the
metric names, namespace, dimensions and units are compared with what the exporters emit for
a worker snapshot."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from botocore.session import get_session
from botocore.validate import ParamValidator
from prometheus_client import CollectorRegistry, generate_latest
from streamkit_kinesis.consumer.metrics import ConsumerMetrics, ShardMetrics
from streamkit_kinesis.leases import LeaseMetrics
from streamkit_kinesis.leases.metrics import CallTimings
from streamkit_kinesis.metrics_cloudwatch import KinesisCloudWatchReporter
from streamkit_kinesis.metrics_prometheus import KinesisCollector

DOCS = Path(__file__).resolve().parent.parent / "docs" / "scaling"
APP = "clicks-app"
REQUIRED = {
    "prometheus": {"serverAddress", "query", "threshold"},
    "aws-cloudwatch": {"awsRegion", "namespace", "metricName", "dimensionName",
                       "dimensionValue", "targetMetricValue"},
}  # fmt: skip


def snapshot() -> ConsumerMetrics:
    shards = (ShardMetrics("shardId-0", millis_behind_latest=500, held=True),)
    return ConsumerMetrics("w-1", shards, LeaseMetrics("w-1", 1, 0, 0, 0, 0, 0, 0, 0, 0, 0), 0)


class Recorder:
    """Stands in for the CloudWatch publisher: keeps what the reporter adds."""

    def __init__(self) -> None:
        self.added: list[tuple[str, str, str, dict[str, str]]] = []

    def add(self, namespace: str, name: str, value: float, unit: str = "None", *,
            dimensions: dict[str, str], level: Any = None, count: int = 1) -> None:  # fmt: skip
        self.added.append((namespace, name, unit, dict(dimensions)))


def published() -> list[tuple[str, str, str, dict[str, str]]]:
    consumer: Any = type("C", (), {"config": type("Cfg", (), {"app_name": APP})(),
                                   "metrics": lambda self: snapshot(),
                                   "call_timings": CallTimings()})()  # fmt: skip
    recorder: Any = Recorder()
    KinesisCloudWatchReporter.of(consumer).report(recorder)
    added: list[tuple[str, str, str, dict[str, str]]] = recorder.added
    return added


def scaled_objects() -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all((DOCS / "keda-scaledobject.yaml").read_text()) if d]
    assert len(docs) == 2
    return docs


def test_keda_scaled_objects_are_complete() -> None:
    for doc in scaled_objects():
        assert doc["apiVersion"] == "keda.sh/v1alpha1"
        assert doc["kind"] == "ScaledObject"
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])
        spec = doc["spec"]
        assert spec["scaleTargetRef"]["name"]
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        (trigger,) = spec["triggers"]
        assert trigger["metricType"] in {"Value", "AverageValue", "Utilization"}
        meta = trigger["metadata"]
        assert REQUIRED[trigger["type"]] <= set(meta)
        assert all(isinstance(v, str) for v in meta.values())  # KEDA reads strings only
        float(meta.get("threshold") or meta["targetMetricValue"])


def test_keda_prometheus_query_names_an_exported_series() -> None:
    (prom,) = [d for d in scaled_objects() if d["spec"]["triggers"][0]["type"] == "prometheus"]
    query = prom["spec"]["triggers"][0]["metadata"]["query"]
    registry = CollectorRegistry()
    registry.register(KinesisCollector(lambda: [("clicks", snapshot())]))
    exposed = generate_latest(registry).decode()
    name = re.search(r"\((\w+)\{", query)
    assert name is not None, query
    sample = re.search(rf'^{name.group(1)}\{{([^}}]*)\}} (\S+)$', exposed, re.MULTILINE)
    assert sample is not None, f"{name.group(1)} is not exported"
    assert 'query="clicks"' in sample.group(1)
    assert 'query="clicks"' in query
    assert float(sample.group(2)) == 0.5


def test_keda_cloudwatch_trigger_reads_the_published_backlog() -> None:
    (cw,) = [d for d in scaled_objects() if d["spec"]["triggers"][0]["type"] == "aws-cloudwatch"]
    meta = cw["spec"]["triggers"][0]["metadata"]
    dims = dict(zip(meta["dimensionName"].split(";"), meta["dimensionValue"].split(";"),
                    strict=True))  # fmt: skip
    assert (meta["namespace"], meta["metricName"], meta["metricUnit"], dims) in published()


def ecs(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DOCS / name).read_text())
    return loaded


def test_ecs_policy_is_valid_for_application_auto_scaling() -> None:
    model = get_session().get_service_model("application-autoscaling")
    for operation, file in (("RegisterScalableTarget", "ecs-register-scalable-target.json"),
                            ("PutScalingPolicy", "ecs-target-tracking-policy.json")):  # fmt: skip
        shape = model.operation_model(operation).input_shape
        assert shape is not None
        report = ParamValidator().validate(ecs(file), shape)
        assert not report.has_errors(), f"{file}: {report.generate_report()}"
    policy = ecs("ecs-target-tracking-policy.json")
    target = ecs("ecs-register-scalable-target.json")
    assert policy["PolicyType"] == "TargetTrackingScaling"
    for key in ("ServiceNamespace", "ResourceId", "ScalableDimension"):
        assert policy[key] == target[key]
    metric = policy["TargetTrackingScalingPolicyConfiguration"]["CustomizedMetricSpecification"]
    dims = {d["Name"]: d["Value"] for d in metric["Dimensions"]}
    assert (metric["Namespace"], metric["MetricName"], metric["Unit"], dims) in published()
    assert metric["Statistic"] == "Maximum"  # the fleet's worst worker

"""Smoke tests: each test server answers real clients over the wire, and stops cleanly.

LocalStack: Kinesis, DynamoDB (conditional writes prove the offline DynamoDB Local seeding)
and S3. kinesalite: Kinesis. Apache Kafka and Tansu: a produce/consume round trip with
aiokafka; Kafka also transactions and end offsets.
"""

from __future__ import annotations

import os
import re
import signal
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from botocore.exceptions import ClientError

from streamkit.testing.servers import ServerStartError, start_kafka, start_tansu
from streamkit.testing.servers._proc import port_open, start_process
from streamkit.testing.servers._server import Launch, launch

if TYPE_CHECKING:
    from streamkit.config import AwsEndpoint

pytestmark = pytest.mark.integration


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _active_stream(kinesis: Any, shards: int) -> str:
    """Create a stream with ``shards`` shards and wait (bounded) until it is ACTIVE."""
    name = _name("smoke")
    kinesis.create_stream(StreamName=name, ShardCount=shards)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
        if summary["StreamStatus"] == "ACTIVE":
            return name
        time.sleep(0.1)
    raise AssertionError(f"stream {name} not ACTIVE after 60 s")


def _kinesis_round_trip(endpoint: AwsEndpoint) -> None:
    """Put 20 records over 2 shards; read every shard from TRIM_HORIZON; same records back."""
    kinesis = endpoint.client("kinesis")
    name = _active_stream(kinesis, shards=2)
    sent = {f"key-{i}": f"value-{i}".encode() for i in range(20)}
    entries = [{"Data": data, "PartitionKey": key} for key, data in sent.items()]
    result = kinesis.put_records(StreamName=name, Records=entries)
    assert result["FailedRecordCount"] == 0

    received: dict[str, bytes] = {}
    for shard in kinesis.list_shards(StreamName=name)["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=name, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        records = kinesis.get_records(ShardIterator=iterator, Limit=100)["Records"]
        sequence = [int(r["SequenceNumber"]) for r in records]
        assert sequence == sorted(sequence), "records of a shard come back in order"
        received.update({r["PartitionKey"]: r["Data"] for r in records})
    assert received == sent
    kinesis.delete_stream(StreamName=name)


@pytest.mark.localstack
def test_localstack_kinesis_put_get(localstack_endpoint: AwsEndpoint) -> None:
    _kinesis_round_trip(localstack_endpoint)


def test_kinesalite_kinesis_put_get(kinesalite_endpoint: AwsEndpoint) -> None:
    _kinesis_round_trip(kinesalite_endpoint)


@pytest.mark.localstack
def test_localstack_dynamodb_conditional_put(localstack_endpoint: AwsEndpoint) -> None:
    ddb = localstack_endpoint.client("dynamodb")
    table = _name("leases")
    ddb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "leaseKey", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "leaseKey", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    ddb.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 1})
    item = {"leaseKey": {"S": "shard-0"}, "leaseCounter": {"N": "1"}}
    ddb.put_item(TableName=table, Item=item, ConditionExpression="attribute_not_exists(leaseKey)")
    with pytest.raises(ClientError) as err:
        ddb.put_item(
            TableName=table, Item=item, ConditionExpression="attribute_not_exists(leaseKey)"
        )
    assert err.value.response["Error"]["Code"] == "ConditionalCheckFailedException"

    ddb.update_item(
        TableName=table,
        Key={"leaseKey": {"S": "shard-0"}},
        UpdateExpression="SET leaseCounter = leaseCounter + :one",
        ConditionExpression="leaseCounter = :expected",
        ExpressionAttributeValues={":one": {"N": "1"}, ":expected": {"N": "1"}},
    )
    got = ddb.get_item(TableName=table, Key={"leaseKey": {"S": "shard-0"}}, ConsistentRead=True)
    assert got["Item"]["leaseCounter"] == {"N": "2"}
    ddb.delete_table(TableName=table)


@pytest.mark.localstack
def test_localstack_s3_put_get(localstack_endpoint: AwsEndpoint) -> None:
    s3 = localstack_endpoint.client("s3")
    bucket = _name("smoke")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="a/b.txt", Body=b"hello")
    assert s3.get_object(Bucket=bucket, Key="a/b.txt")["Body"].read() == b"hello"
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="a/")["Contents"]
    assert [o["Key"] for o in listed] == ["a/b.txt"]


def test_aws_endpoint_runs_on_each_backend(aws_backend: str, aws_endpoint: AwsEndpoint) -> None:
    """The parametrized fixture hands each backend's own endpoint to the test."""
    s3 = aws_endpoint.client("s3")
    bucket = _name(aws_backend)
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=aws_backend.encode())
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == aws_backend.encode()


@pytest.mark.moto_gap("ListShards ignores ExclusiveStartShardId")
def test_list_shards_exclusive_start(aws_endpoint: AwsEndpoint) -> None:
    """A strict xfail on moto, a pass on LocalStack: proves the ``moto_gap`` marker."""
    kinesis = aws_endpoint.client("kinesis")
    name = _active_stream(kinesis, shards=3)
    shard_ids = [s["ShardId"] for s in kinesis.list_shards(StreamName=name)["Shards"]]
    after_first = kinesis.list_shards(StreamName=name, ExclusiveStartShardId=shard_ids[0])
    assert [s["ShardId"] for s in after_first["Shards"]] == shard_ids[1:]


async def test_broker_produce_consume_round_trip(any_kafka: str) -> None:
    topic = _name("smoke")
    admin = AIOKafkaAdminClient(bootstrap_servers=any_kafka)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    finally:
        await admin.close()

    sent = {f"k{i}".encode(): f"v{i}".encode() for i in range(20)}
    producer = AIOKafkaProducer(bootstrap_servers=any_kafka)
    await producer.start()
    try:
        for key, value in sent.items():
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=any_kafka,
        group_id=_name("group"),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,  # Kafka's default group.min.session.timeout.ms
        heartbeat_interval_ms=1000,
    )
    await consumer.start()
    try:
        received: dict[bytes, bytes] = {}
        while len(received) < len(sent):
            batch = await consumer.getmany(timeout_ms=10_000)
            assert batch, f"no records within 10 s; have {len(received)} of {len(sent)}"
            for records in batch.values():
                received.update({r.key: r.value for r in records if r.key and r.value})
        await consumer.commit()
        committed = [await consumer.committed(TopicPartition(topic, p)) for p in (0, 1)]
    finally:
        await consumer.stop()
    assert received == sent
    assert sum(c or 0 for c in committed) == len(sent)


async def test_apache_kafka_has_transactions_and_true_end_offsets(kafka_bootstrap: str) -> None:
    """What Tansu lacks: a committed transaction is visible to read_committed readers, an
    aborted one is not, and end offsets count every record and control marker."""
    topic = _name("tx")
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, transactional_id=_name("t"))
    await producer.start()
    try:
        async with producer.transaction():
            for i in range(3):
                await producer.send(topic, b"kept-%d" % i)
        await producer.begin_transaction()
        await producer.send(topic, b"dropped")
        await producer.abort_transaction()
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka_bootstrap,
                                isolation_level="read_committed",
                                auto_offset_reset="earliest")  # fmt: skip
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        # 3 records + commit marker + 1 aborted record + abort marker
        assert (await consumer.end_offsets([tp]))[tp] == 6
        values: list[bytes] = []
        while len(values) < 3:
            batch = await consumer.getmany(timeout_ms=10_000)
            assert batch, f"no committed records within 10 s; have {values}"
            values += [r.value for records in batch.values() for r in records if r.value]
    finally:
        await consumer.stop()
    assert values == [b"kept-0", b"kept-1", b"kept-2"]


@pytest.mark.parametrize("start", [start_tansu, start_kafka], ids=["tansu", "kafka"])
def test_stopped_server_leaves_nothing(servers_cache_dir: Path, start: Any) -> None:
    """stop() ends the process by PID, frees its ports (Apache Kafka's controller port
    too), and removes the run folder."""
    with start(servers_cache_dir) as broker:
        assert broker.running()
        ports = [broker.port]
        props = broker.run_dir / "server.properties"
        if props.exists():  # Apache Kafka: the KRaft controller listens on a port of its own
            ports += [
                int(p) for p in re.findall(r"CONTROLLER://127\.0\.0\.1:(\d+)", props.read_text())
            ]
            assert len(ports) == 2
        assert all(port_open("127.0.0.1", port) for port in ports)
        pid, run_dir = broker.pid, broker.run_dir
    assert not broker.running()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not any(port_open("127.0.0.1", port) for port in ports)
    assert not run_dir.exists()


def test_stop_ends_descendants_in_their_own_session(tmp_path: Path) -> None:
    """Like LocalStack's DynamoDB Local, a child in its own session is still stopped."""
    pid_file = tmp_path / "child.pid"
    # The pid file appears only once both hold (else stop() could come first under load):
    # the child is in its own session (it writes its pid after setsid) and the shell
    # ignores TERM (the child was started before the trap: it keeps TERM's default).
    script = (
        f"setsid sh -c 'echo $$ > {pid_file}.new; exec sleep 300' & trap '' TERM; "
        f"while [ ! -s {pid_file}.new ]; do sleep 0.05; done; mv {pid_file}.new {pid_file}; wait"
    )
    proc = start_process("sh", ["sh", "-c", script], log_path=tmp_path / "log")
    deadline = time.monotonic() + 60
    while not (pid_file.exists() and pid_file.read_text().strip()):
        assert time.monotonic() < deadline, "child never started"
        time.sleep(0.05)
    child = int(pid_file.read_text())
    proc.stop(grace=1.0)
    assert proc.popen.returncode == -signal.SIGKILL, "TERM was trapped, so KILL was needed"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _running(child):
        time.sleep(0.05)
    assert not _running(child)


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_server_that_exits_early_is_retried_then_reported(tmp_path: Path) -> None:
    """A server dying before ready is retried on fresh ports; the error carries its log."""
    ports: list[int] = []

    def plan(port: int, run_dir: Path) -> Launch:
        ports.append(port)
        return Launch(cmd=["sh", "-c", "echo cannot bind; exit 3"], env=None, ready=lambda: False)

    with pytest.raises(ServerStartError, match="cannot bind") as err:
        launch("failing", tmp_path, plan, timeout=10, attempts=3)
    assert "exited with code 3" in str(err.value)
    assert len(ports) == 3
    assert list((tmp_path / "runs").iterdir()) == []


def test_server_not_ready_in_time_is_stopped(tmp_path: Path) -> None:
    """On a start timeout the process is stopped, not retried, and not left running."""
    started: list[Path] = []

    def plan(port: int, run_dir: Path) -> Launch:
        started.append(run_dir)
        script = f"echo $$ > {tmp_path}/pid; exec sleep 300"
        return Launch(cmd=["sh", "-c", script], env=None, ready=lambda: False)

    with pytest.raises(ServerStartError, match="not ready after"):
        launch("slow", tmp_path, plan, timeout=0.5)
    assert len(started) == 1
    assert not _running(int((tmp_path / "pid").read_text()))

"""Typed errors of the Kafka connector; every message says what to do."""

from __future__ import annotations

from streamkit.errors import StreamkitError


class KafkaConnectorError(StreamkitError):
    """Base class of the Kafka connector's errors."""


class BrokerUnreachableError(KafkaConnectorError):
    """No broker of ``bootstrap`` answered after a bounded number of attempts."""

    def __init__(self, bootstrap: str, attempts: int, cause: str = "") -> None:
        self.bootstrap = bootstrap
        self.attempts = attempts
        why = f": {cause}" if cause else ""
        super().__init__(
            f"cannot reach a Kafka broker at {bootstrap} after {attempts} attempt(s){why}; "
            "start the broker (or the docker compose file in docker/) or fix bootstrap / "
            "STREAMKIT_KAFKA_BOOTSTRAP"
        )


class TopicNotFoundError(KafkaConnectorError):
    """A topic does not exist on the cluster."""

    def __init__(self, topics: list[str], bootstrap: str) -> None:
        self.topics = topics
        names = ", ".join(repr(t) for t in topics)
        super().__init__(
            f"Kafka topic(s) {names} not found on {bootstrap}; create them first (e.g. "
            "AIOKafkaAdminClient.create_topics or kafka-topics.sh --create)"
        )


class KafkaSourceError(KafkaConnectorError):
    """The Kafka source cannot go on (not opened, no assignment in time, ...)."""


class KafkaSinkError(KafkaConnectorError):
    """The Kafka sink could not deliver a batch (after the producer's retries)."""

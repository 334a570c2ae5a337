"""The Kafka broker the suite starts formats its storage with a random cluster id; an id
that starts with ``-`` is read by the storage tool as an option and the start fails (one
start in 64: URL-safe base64's ``-`` is the 63rd of 64 letters). Such a draw is drawn
again."""

from __future__ import annotations

import base64
import uuid

import pytest

from streamkit.testing.servers import kafka


def test_a_cluster_id_starting_with_a_dash_is_drawn_again(monkeypatch: pytest.MonkeyPatch) -> None:
    dash = uuid.UUID(bytes=bytes([0xF8]) + bytes(15))  # 0b111110 first: "-"
    plain = uuid.UUID(bytes=bytes([0x10]) + bytes(15))
    assert base64.urlsafe_b64encode(dash.bytes).startswith(b"-")
    draws = iter([dash, dash, plain])
    monkeypatch.setattr(uuid, "uuid4", lambda: next(draws))
    assert kafka._cluster_id() == "EAAAAAAAAAAAAAAAAAAAAA"  # plain's 16 bytes, no padding


def test_cluster_ids_are_22_url_safe_letters() -> None:
    letters = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    for _ in range(500):
        cluster = kafka._cluster_id()
        assert len(cluster) == 22
        assert set(cluster) <= letters
        assert not cluster.startswith("-")

"""botocore sessions for streamkit's clients, sharing the process's loaded botocore data.

A client made from a fresh botocore session re-reads botocore's service model, endpoint and
partition data (~70 ms of CPU per client); a fresh session that shares one loader with every
other session of the process makes its client in ~7 ms, about half of it registering
botocore's ~130 built-in event handlers (each checked by signature inspection), which a
session here copies instead from a set registered once per process (11.4 -> 5.3 ms per
client on a loaded box, ``bench/boto_client_cost.py``). Guarantees:

- Each client still gets a session of its own: credentials (the default chain included),
  config files, response parser options and event handlers are resolved and registered per
  client, as with a fresh session. Only the loader is shared: the JSON data every client of
  the process reads alike (``AWS_DATA_PATH`` is read once, by the first session). Each
  session's event handlers are its own copy of the built-in ones (the same handlers, in
  the same order, as ``botocore.session.Session()`` registers at that moment, a change
  to ``botocore.handlers.BUILTIN_HANDLERS`` included), so a handler registered on one
  session or client never reaches another.
- Region, endpoint URL, credentials and config are passed to each client and no client is
  cached, so no client is ever handed out for another endpoint, region or key.
- Sessions are made and clients created holding one process lock (botocore's sessions and
  its loader's caches are not thread-safe); a forked child gets a new lock. A client whose
  credentials come from the default chain resolves them under it (instance metadata
  included), so such creations queue behind one another.
"""

from __future__ import annotations

import copy
import os
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from streamkit._deps import require

if TYPE_CHECKING:
    from collections.abc import Iterator


class _Shared:
    """The process's loader (the first session's), botocore's built-in event handlers
    (registered once) and the lock every creation holds."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.loader: Any = None
        self.handlers: Any = None
        self.handler_specs: tuple[Any, ...] = ()

    def after_fork_in_child(self) -> None:
        """A lock held by another thread at the fork would never be released here."""
        self.lock = threading.Lock()


_SHARED = _Shared()
os.register_at_fork(after_in_child=_SHARED.after_fork_in_child)


@contextmanager
def fresh_session() -> Iterator[Any]:
    """A new ``botocore.session.Session`` on the process's loader, the creation lock held
    until the block exits: create the client inside the block."""
    botocore_session = require("botocore.session", "s3")
    from botocore.handlers import BUILTIN_HANDLERS

    with _SHARED.lock:
        if _SHARED.handlers is None or not _same(_SHARED.handler_specs, BUILTIN_HANDLERS):
            # Built once, and again whenever the list changed since (moto, for one,
            # appends its request stubber to it when imported).
            _SHARED.handler_specs = tuple(BUILTIN_HANDLERS)
            _SHARED.handlers = _builtin_handlers(_SHARED.handler_specs)
        session = botocore_session.Session(
            event_hooks=copy.copy(_SHARED.handlers), include_builtin_handlers=False
        )
        if _SHARED.loader is None:
            _SHARED.loader = session.get_component("data_loader")
        else:
            session.register_component("data_loader", _SHARED.loader)
        yield session


def _same(specs: tuple[Any, ...], current: list[Any]) -> bool:
    """Whether ``current`` holds exactly ``specs``, the same objects in the same order."""
    return len(specs) == len(current) and all(a is b for a, b in zip(specs, current, strict=True))


def _builtin_handlers(specs: tuple[Any, ...]) -> Any:
    """An event emitter holding botocore's built-in handlers ``specs``, registered as
    ``botocore.session.Session`` registers them into each new session (through the event
    aliaser; ``REGISTER_FIRST`` / ``REGISTER_LAST`` placements kept). Only ever copied."""
    from botocore import handlers, hooks

    emitter = hooks.HierarchicalEmitter()
    events = hooks.EventAliaser(emitter)
    for spec in specs:
        if len(spec) == 2:
            events.register(spec[0], spec[1])
        elif spec[2] is handlers.REGISTER_FIRST:
            events.register_first(spec[0], spec[1])
        elif spec[2] is handlers.REGISTER_LAST:
            events.register_last(spec[0], spec[1])
    return emitter


def boto3_client(service: str, config: Any = None, **kwargs: Any) -> Any:
    """A boto3 client for ``service`` (boto3's additions included, e.g. S3's
    ``upload_file``) from a fresh session on the process's loader; ``kwargs`` go to
    ``Session.client`` (region, endpoint, keys)."""
    boto3 = require("boto3", "s3")
    with fresh_session() as session:
        wrapped = boto3.session.Session(botocore_session=session)
        paths = session.get_component("data_loader").search_paths
        paths[:] = dict.fromkeys(paths)  # boto3 appends its data folder for every session
        return wrapped.client(service, config=config, **kwargs)

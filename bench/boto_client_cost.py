"""CPU per boto client by how its session is made (issue 15 item 1, ``open``'s fixed cost).

Usage:
    nice -n 10 .venv/bin/python bench/boto_client_cost.py [--reps 5]

Each rep makes one Kinesis, one DynamoDB and one CloudWatch client (endpoint, region and
keys given; no call is sent) in each of four ways, interleaved, the order rotating per rep:

- own loader: a new ``boto3.session.Session()`` per client, as before
  :mod:`streamkit.aws_sessions` (its botocore session re-reads botocore's data);
- shared loader, handlers registered: a new session per client on the process's loader
  that registers botocore's built-in event handlers itself (streamkit before session 21);
- shared loader: :meth:`AwsEndpoint.client` (a new session per client on the process's
  loader, under its lock, with a copy of the built-in handlers registered once per
  process): what streamkit does;
- shared session: one ``boto3.session.Session`` for every client (the reverted design).

One untimed client of each service per way first. Reported: the median over reps of CPU ms
per client (this process's CPU time), and the ratio to "own loader".
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import _kinesis_before as kinesis_before
import boto3

from streamkit.config import AwsEndpoint

SERVICES = ("kinesis", "dynamodb", "cloudwatch")
ENDPOINT = AwsEndpoint.local("http://127.0.0.1:9")


def ways() -> dict[str, Callable[[str], Any]]:
    session: Any = boto3.session.Session  # services as plain strings, not the stubs' literals
    shared = session()
    kwargs = ENDPOINT.client_kwargs()

    def registering(service: str) -> Any:
        with kinesis_before.before():
            return ENDPOINT.client(service)

    return {
        "own loader": lambda s: session().client(s, **kwargs),
        "shared loader, handlers registered": registering,
        "shared loader": ENDPOINT.client,
        "shared session": lambda s: shared.client(s, **kwargs),
    }


def main(reps: int) -> None:
    makers = ways()
    names = list(makers)
    for make in makers.values():  # untimed: imports, first loads
        for service in SERVICES:
            make(service)
    ms: dict[str, list[float]] = {n: [] for n in names}
    for rep in range(reps):
        for k in range(len(names)):
            name = names[(rep + k) % len(names)]
            cpu = time.process_time()
            for service in SERVICES:
                makers[name](service)
            ms[name].append((time.process_time() - cpu) / len(SERVICES) * 1e3)
    base = statistics.median(ms[names[0]])
    print("| session | CPU ms per client (median) | vs own loader |\n|---|---:|---:|")
    for name in names:
        med = statistics.median(ms[name])
        print(f"| {name} | {med:.2f} | {base / med:.1f}x less |")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--reps", type=int, default=5)
    main(p.parse_args().reps)

"""Spark Structured Streaming reading Kinesis: can the awslabs connector be had here?

Usage:
    .venv/bin/python bench/spark_kinesis.py

The W3 query beside streamkit needs the awslabs Kinesis connector for Structured Streaming
(``CONNECTOR``, Spark 3.5 / Scala 2.12; its own pom names group ``org.apache.spark``). This
asks Maven Central for it with Maven (``mvn dependency:get``, no transitive dependencies)
and prints the outcome. The connector is published as a jar in an AWS-hosted bucket, not
on Maven Central, and these machines reach only the package registries: while it does not
resolve, nothing is measured and the exit status is 0 (see "Peers" in bench/README.md).
Once it resolves, the measurement is still to be written (exit status 2 says so).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

CONNECTOR = "org.apache.spark:spark-streaming-sql-kinesis-connector_2.12:1.4.0"


def resolve(coordinates: str) -> tuple[bool, str]:
    """``mvn dependency:get`` of one artifact: whether it resolved, and Maven's first error."""
    mvn = shutil.which("mvn")
    if mvn is None:
        return False, "mvn not found (Debian: apt-get install maven)"
    cmd = [mvn, "-B", "-q", "-U", "-Dstyle.color=never", "dependency:get",
           f"-Dartifact={coordinates}", "-Dtransitive=false"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=300)
    found = re.search(r"Could(n.t| not) (download|find|transfer) artifact[^\n]*", out.stdout)
    return out.returncode == 0, (found.group(0) if found else out.stdout.strip()[-400:])


def main() -> int:
    ok, detail = resolve(CONNECTOR)
    if not ok:
        print(f"Spark on Kinesis: not measured: {CONNECTOR} does not resolve:\n  {detail}")
        return 0
    print(f"{CONNECTOR} resolves; the Spark-on-Kinesis measurement is not written yet")
    return 2


if __name__ == "__main__":
    sys.exit(main())

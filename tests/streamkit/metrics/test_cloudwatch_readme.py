"""The README's CloudWatch example runs as written (in its own process, pointed at LocalStack
by ``STREAMKIT_AWS_ENDPOINT``), prints what its ``# ->`` comment says, and its figures are
in CloudWatch afterwards."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from streamkit.config import AwsEndpoint

from .cloudwatch_read import stat

pytestmark = [pytest.mark.integration, pytest.mark.localstack]

README = Path(__file__).resolve().parents[3] / "README.md"


def cloudwatch_example() -> str:
    """The python block of the README's "### CloudWatch" subsection."""
    text = README.read_text()
    start = text.index("\n### CloudWatch\n")
    end = text.index("\n## ", start)
    blocks = re.findall(r"```python\n(.*?)```", text[start:end], flags=re.DOTALL)
    assert len(blocks) == 1
    return str(blocks[0])


def test_readme_cloudwatch_example_runs(localstack_endpoint: AwsEndpoint) -> None:
    assert localstack_endpoint.url is not None
    code = cloudwatch_example()
    env = {**os.environ, "STREAMKIT_AWS_ENDPOINT": localstack_endpoint.url,
           "AWS_DEFAULT_REGION": localstack_endpoint.region}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True"]
    cw = localstack_endpoint.client("cloudwatch")
    assert stat(cw, "my-app", "InputRows", {"Query": "counts"}, "Sum") == 3

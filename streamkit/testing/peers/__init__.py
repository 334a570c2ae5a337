"""Real peers of streamkit for interoperability tests: other implementations of the same
protocols, run as processes beside streamkit's own workers.

- :mod:`.kcl`: a Java KCL 2.x consumer application (``tests/peers/kcl``) that shares a
  DynamoDB lease table with streamkit workers.

Not imported by ``import streamkit``; tests import it explicitly.
"""

from __future__ import annotations

from .kcl import KCL_VERSION, KclWorker, install_kcl, start_kcl_worker

__all__ = ["KCL_VERSION", "KclWorker", "install_kcl", "start_kcl_worker"]

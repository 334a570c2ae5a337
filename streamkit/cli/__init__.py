"""The ``streamkit`` command line: ``demo``, ``stream``, ``produce``, ``leases``, ``run``.

Entry point: :func:`streamkit.cli.main.main` (installed as the ``streamkit`` script).
"""

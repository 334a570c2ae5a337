"""``python -m streamkit.cli``: the ``streamkit`` command (how ``run --workers`` starts its
workers with the same interpreter)."""

from streamkit.cli.main import main

main()

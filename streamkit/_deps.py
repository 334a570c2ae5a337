"""Optional dependencies: import one, or fail with the exact install command."""

from __future__ import annotations

import importlib
from types import ModuleType

from streamkit.errors import MissingDependencyError


def require(module: str, extra: str) -> ModuleType:
    """Import ``module``; if it is missing, raise :class:`MissingDependencyError` naming
    ``pip install 'streamkit[<extra>]'``. Errors raised while importing an installed module
    propagate unchanged."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        top = module.partition(".")[0]
        if e.name is not None and (e.name == module or e.name.partition(".")[0] == top):
            raise MissingDependencyError(module, extra) from e
        raise

"""Modules imported on first attribute access, so ``import streamkit`` does not load them.

numpy and pyarrow take about as long to import as Polars; building a plan needs neither,
only running one does. ``np = lazy_module("numpy")`` behaves as the module from the first
``np.<name>`` on (modules import under ``if TYPE_CHECKING`` for the type checker).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class _LazyModule(ModuleType):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.__dict__["_lazy_target"] = None

    def __getattr__(self, attr: str) -> Any:
        target = self.__dict__["_lazy_target"]
        if target is None:
            target = importlib.import_module(self.__name__)
            self.__dict__["_lazy_target"] = target
        return getattr(target, attr)


def lazy_module(name: str) -> Any:
    """A stand-in for module ``name`` that imports it when an attribute is first read."""
    return _LazyModule(name)

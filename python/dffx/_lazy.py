"""Attributes of a package that import their submodule on first use (PEP 562)."""

from __future__ import annotations

from importlib import import_module


def lazy_attributes(package: str, exports: dict[str, str], namespace: dict):
    """Module-level ``__getattr__`` and ``__dir__`` for ``package``.

    Args:
        package: the package's ``__name__``.
        exports: attribute name -> submodule path relative to the package ("nn.extractor").
        namespace: the package's ``globals()``; a loaded attribute is stored there, so later
            lookups do not come back here.

    Returns:
        (``__getattr__``, ``__dir__``); ``__getattr__`` raises AttributeError for other names.
    """
    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(f".{exports[name]}", package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__

"""Typed views of what a probe measured.

A probe fills ``ProbeResult.values``: a JSON-ready mapping that is stored, served by
the API and shown on the pages. Each probe module declares the keys it writes as a
frozen dataclass deriving from ``Values`` (``TlsValues``, ``QuotaValues``, ...), and
readers outside the probe use the declaration, never a key written as a string:

* ``TlsValues.of(result).chain_earliest_not_after`` — a typed field (mypy checks the
  name), ``None`` (or the field's default) when the result does not carry it;
* ``TlsValues.key.chain_earliest_not_after`` — the key itself, for a store query; an
  undeclared name raises ``AttributeError`` naming the declared ones.

``tests/checks/test_values.py`` holds every probe to its declaration, and the
dashboard to reading through declarations.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol, Self, TypeVar


class _HasValues(Protocol):
    @property
    def values(self) -> Mapping[str, Any]: ...


class Keys:
    """``Declaration.key.name`` -> ``"name"``, for the declared names only."""

    __slots__ = ("_names", "_owner")

    def __init__(self, owner: str, names: frozenset[str]) -> None:
        self._owner = owner
        self._names = names

    def __getattr__(self, name: str) -> str:
        if name.startswith("_") or name not in self._names:
            raise AttributeError(
                f"{self._owner} declares no value {name!r} "
                f"(declared: {', '.join(sorted(self._names))})"
            )
        return name


@dataclasses.dataclass(frozen=True)
class Values:
    """Base of every probe's declaration of its values."""

    key: ClassVar[Any]  # a Keys of the subclass's fields (Any: attribute names are dynamic)

    @classmethod
    def names(cls) -> frozenset[str]:
        # Every reader calls of() per result (the fleet view: thousands a rebuild); the
        # fields of a frozen declaration never change, so they are worked out once.
        return _field_names(cls)

    @classmethod
    def of(cls, source: Mapping[str, Any] | _HasValues) -> Self:
        """The declared values of a result (or of its values mapping); others are ignored."""
        data: Mapping[str, Any] = source if isinstance(source, Mapping) else source.values
        return cls(**{name: data[name] for name in cls.names() if name in data})


_NAMES: dict[type[Values], frozenset[str]] = {}


def _field_names(cls: type[Values]) -> frozenset[str]:
    names = _NAMES.get(cls)
    if names is None:
        names = _NAMES[cls] = frozenset(f.name for f in dataclasses.fields(cls))
    return names


V = TypeVar("V", bound=type[Values])


def declared(cls: V) -> V:
    """Class decorator after ``@dataclass``: makes ``cls.key`` from the declared fields."""
    cls.key = Keys(cls.__name__, cls.names())
    return cls

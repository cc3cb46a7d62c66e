"""A named table of specs: the one shape behind the benchmark, encoder, CLIP and CRF-backend registries.

Each registry is a read-only mapping name -> spec (iteration in registration order) with `register`,
`unregister` and `lookup`; an unknown name is a ValueError listing the known ones, worded with the
config key the name came from (e.g. "unknown dataset_name 'x'; known: a, b").
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Callable, Generic, Iterable, Optional, TypeVar

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """name -> spec, in registration order.

    kind: what an entry is, for the duplicate-name error ("encoder 'x' is already registered").
    key: how an unknown name is called in the lookup error ("unknown {key} 'x'; known: ...").
    reserved: names that can never be registered (e.g. the CRF backend 'auto').
    """

    def __init__(self, kind: str, key: str, reserved: Iterable[str] = ()) -> None:
        self.kind = kind
        self.key = key
        self.reserved = frozenset(reserved)
        self._entries: dict[str, T] = {}

    def register(self, name: str, spec: T, replace: bool = False) -> T:
        """Add `spec` under `name`; a taken name needs `replace`, a reserved one is refused."""
        if name in self.reserved:
            raise ValueError(f"{self.kind} {name!r} is reserved")
        if name in self._entries and not replace:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = spec
        return spec

    def unregister(self, name: str) -> None:
        """Remove `name` if registered (tests that add a temporary entry clean up with this)."""
        self._entries.pop(name, None)

    def names(self, keep: Optional[Callable[[T], bool]] = None) -> tuple[str, ...]:
        """The registered names in registration order (only those whose spec passes `keep`, if given)."""
        return tuple(name for name, spec in self._entries.items() if keep is None or keep(spec))

    def unknown(self, name: str, known: Optional[Iterable[str]] = None, key: Optional[str] = None) -> ValueError:
        """The error for an unknown `name`: names `key` (default self.key) and lists `known` (default all)."""
        listed = ", ".join(self.names() if known is None else known)
        return ValueError(f"unknown {key or self.key} {name!r}; known: {listed}")

    def lookup(self, name: str) -> T:
        """The spec of `name`, or a ValueError listing the known names."""
        if name not in self._entries:
            raise self.unknown(name)
        return self._entries[name]

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"

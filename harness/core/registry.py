"""One registry mechanism for everything that varies: crossover operators, fine-tune regimes, teachers, metrics.

A :class:`Registry` maps names to entries. Built-in entries register at import of their module (listed
explicitly in the package that owns the registry); third-party entries register from user code (a conftest, a
package) with the same call, or through an entry-point group, loaded once on the first lookup. Lookups of an
unknown name raise :class:`~harness.core.errors.SpaceError` listing the known names with a "did you mean" hint.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
from importlib import metadata
from typing import Generic, TypeVar

from harness.core.errors import SpaceError, first_line

T = TypeVar("T")


def check_name(kind: str, value: str, known: Iterable[str], *, field: str | None = None) -> str:
    """``value`` if it is one of ``known``; else a one-line SpaceError listing them, with a close match."""
    names = tuple(known)
    if value not in names:
        # Names are case-sensitive (they are file names' parts); a case-folded match is the likeliest meant.
        folded = [n for n in names if n.casefold() == str(value).casefold()]
        close = folded or difflib.get_close_matches(str(value), names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise SpaceError(f"unknown {kind} {value!r}; known: {', '.join(names)}{hint}", field=field)
    return value


class Registry(Generic[T]):
    """Named entries of one kind, in registration order.

    ``kind`` names the entries in error messages ("crossover operator"); ``group`` is the entry-point group
    whose entries are loaded (imported) before the first lookup, so a distribution can add entries without
    being imported by the user.
    """

    def __init__(self, kind: str, group: str | None = None) -> None:
        self.kind = kind
        self.group = group
        self._entries: dict[str, T] = {}
        self._loaded = group is None

    def register(self, name: str, entry: T, *, replace: bool = False) -> T:
        """Add ``entry`` under ``name``; registering a taken name is an error unless ``replace``."""
        if not isinstance(name, str) or not name or not all(c.isalnum() or c in "_-" for c in name):
            raise SpaceError(f"{self.kind} name {name!r} must be a non-empty word (letters, digits, _ and -)")
        if name in self._entries and not replace:
            raise SpaceError(f"{self.kind} {name!r} is already registered; pick another name or pass replace=True")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests and interactive sessions that registered a temporary entry)."""
        self._entries.pop(name, None)

    def get(self, name: str) -> T:
        self._load_entry_points()
        check_name(self.kind, name, self._entries)
        return self._entries[name]

    def names(self) -> tuple[str, ...]:
        self._load_entry_points()
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load_entry_points()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def values(self) -> list[T]:
        self._load_entry_points()
        return list(self._entries.values())

    def _load_entry_points(self) -> None:
        if self._loaded:
            return
        self._loaded = True  # first, so an entry point that looks names up does not recurse
        assert self.group is not None
        for ep in metadata.entry_points(group=self.group):
            try:
                ep.load()  # the module registers its entries when imported
            except Exception as exc:
                raise SpaceError(f"entry point {ep.name!r} of group {self.group!r} ({ep.value}) failed to load "
                                 f"({type(exc).__name__}: {first_line(exc)}); fix or uninstall that package") from None

"""Files held in memory until they change: one `os.stat` per request, a reload when the inode,
size or modification time differs. Writers replace snapshots atomically (`os.replace`), so a
changed file is always a new inode and a reload always reads one complete version."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")
Signature = tuple[int, int, int]


class SnapshotReadError(RuntimeError):
    """A published file could not be parsed."""


def _signature(stat: os.stat_result) -> Signature:
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)


class CachedFile(Generic[T]):
    """`get()` returns `parse(bytes)` of the file's current version (None when absent)."""

    def __init__(self, path: Path, parse: Callable[[bytes], T]):
        self.path = Path(path)
        self.parse = parse
        self.loads = 0  # how many times the file was read and parsed (tests count them)
        self._entry: tuple[Signature | None, T | None] = (None, None)
        self._lock = threading.Lock()

    def _current(self) -> Signature | None:
        try:
            return _signature(os.stat(self.path))
        except FileNotFoundError:
            return None

    def get(self) -> T | None:
        signature, value = self._entry  # one read: the signature and its value together
        if self._current() == signature:
            return value
        with self._lock:
            if self._current() != self._entry[0]:
                self._entry = self._load()
            return self._entry[1]

    def _load(self) -> tuple[Signature | None, T | None]:
        try:
            with open(self.path, "rb") as handle:  # one inode: stat and bytes agree
                signature = _signature(os.fstat(handle.fileno()))
                data = handle.read()
        except FileNotFoundError:
            return None, None
        try:
            value = self.parse(data)
        except Exception as exc:
            raise SnapshotReadError(f"could not read {self.path.name}: {exc}") from exc
        self.loads += 1
        return signature, value

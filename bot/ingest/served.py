"""Which index generation a process serves, and the switch to a new one while it serves (replicas, the console).

An ingest in any process publishes a generation by renaming a new current.json into place
(bot/ingest/generations.py). A serving process notices with one stat per lookup and switches without a restart:
one thread loads the new generation while the others keep answering from the current one, and a request pinned
with pinned() sees one generation from retrieval to the stored answer, even when the switch happens meanwhile.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Generic, TypeVar

from bot.core.errors import IndexUnavailableError
from bot.ingest.generations import pointer_stamp, read_pointer

G = TypeVar("G")


class ServedGeneration(Generic[G]):
    """The generation current.json names, loaded by `load(name, switching)` and kept until the pointer changes."""

    def __init__(self, data_dir: Path, load: Callable[[str, bool], G], name_of: Callable[[G], str]):
        self.data_dir = data_dir
        self._load = load
        self._name_of = name_of
        self._current: G | None = None
        self._stamp: tuple[int, int, int] | None = None
        self._lock = threading.Lock()  # one thread loads a new generation; the others keep serving
        # per instance, not per module: a request pinned on one index must not pin another index in the process
        self._pin: ContextVar[list[G] | None] = ContextVar(f"policydesk-pin-{id(self)}", default=None)

    def get(self) -> G | None:
        """Inside pinned(), the generation the request started with; else the current one (None before the
        first ingest)."""
        pin = self._pin.get()
        if pin:
            return pin[0]
        gen = self._lookup()
        if pin is not None and gen is not None:
            pin.append(gen)
        return gen

    @contextmanager
    def pinned(self) -> Iterator[None]:
        """Serve one generation to everything inside (one request, and the threads it hands work to, which copy
        the context); picked on first use inside."""
        token = self._pin.set([])
        try:
            yield
        finally:
            self._pin.reset(token)

    def forget(self) -> None:
        """Drop the loaded generation (this process just swapped the pointer): the next lookup loads the new one."""
        with self._lock:
            self._current, self._stamp = None, None

    def _lookup(self) -> G | None:
        stamp = pointer_stamp(self.data_dir)  # one stat; current.json is read only when it changed
        if stamp is None:
            return None
        current = self._current
        if current is not None and stamp == self._stamp:
            return current
        # With a current generation, a thread that finds another one loading keeps answering from the current one
        # instead of loading a second copy; with none, it waits for the load.
        if not self._lock.acquire(blocking=current is None):
            return current
        try:
            if self._current is not None and pointer_stamp(self.data_dir) == self._stamp:
                return self._current  # loaded by the thread we waited for
            return self._reload(switching=current is not None)
        finally:
            self._lock.release()

    def _reload(self, switching: bool) -> G | None:
        for _ in range(5):
            stamp = pointer_stamp(self.data_dir)  # before the name: a swap in between only costs one more check
            pointer = read_pointer(self.data_dir)
            if pointer is None or stamp is None:
                return None
            name = pointer[1]
            if self._current is not None and self._name_of(self._current) == name:
                self._stamp = stamp
                return self._current
            try:
                gen = self._load(name, switching)
            except FileNotFoundError:  # a newer ingest swapped the pointer and collected this one meanwhile
                continue
            self._current, self._stamp = gen, stamp
            return gen
        raise IndexUnavailableError(f"The index generation in {self.data_dir} kept changing while it was being "
                                    "loaded (are several ingests running against it?); try again.")

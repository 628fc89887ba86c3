"""The machine's load, sampled through a benchmark run (the machine is shared: a figure without it misleads)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Self


class LoadSampler:
    """1-minute load average, sampled every second on a thread while the `with` block runs."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(float(Path("/proc/loadavg").read_text().split()[0]))
            self._stop.wait(1.0)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> str:
        """min / mean / max of the samples."""
        s = self.samples or [0.0]
        return f"{min(s):.1f} / {sum(s) / len(s):.1f} / {max(s):.1f}"

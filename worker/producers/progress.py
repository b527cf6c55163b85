"""A progress line for long work: done/total, rate, and time left.

On a terminal it redraws one line (``\\r``); anywhere else (CI, a log file) it writes a
line every tenth of the way, so a log is not flooded. Light to import: the CLI, the demo
and the benchmarks use it.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

_BAR_WIDTH = 30


class Progress:
    def __init__(self, label: str, total: int, stream: TextIO = sys.stderr) -> None:
        self._label, self._total, self._stream = label, max(total, 1), stream
        self._tty = stream.isatty()
        self._last_decile = -1
        self._started = time.monotonic()

    def update(self, done: int) -> None:
        share = min(done / self._total, 1.0)
        if self._tty:
            filled = int(_BAR_WIDTH * share)
            self._stream.write(
                f"\r{self._label} [{'#' * filled}{'.' * (_BAR_WIDTH - filled)}] "
                f"{done}/{self._total} {self.rate_and_eta(done)}\x1b[K"
            )
            self._stream.flush()
        elif int(share * 10) != self._last_decile:
            self._last_decile = int(share * 10)
            self._stream.write(f"{self._label}: {done}/{self._total} {self.rate_and_eta(done)}\n")
            self._stream.flush()

    def rate_and_eta(self, done: int) -> str:
        """``"12.5/s, 0:42 left"`` (or just the elapsed time before the first item)."""
        elapsed_s = time.monotonic() - self._started
        if done <= 0 or elapsed_s <= 0:
            return f"{clock(elapsed_s)} elapsed"
        rate = done / elapsed_s
        left_s = max(self._total - done, 0) / rate
        return (
            f"{rate:.1f}/s, {clock(left_s)} left"
            if done < self._total
            else (f"{rate:.1f}/s, done in {clock(elapsed_s)}")
        )

    def close(self) -> None:
        if self._tty:
            self._stream.write("\n")
            self._stream.flush()


def clock(seconds: float) -> str:
    """``42:07`` or ``1:02:03``: a duration for people (progress lines, `gvw runs show`)."""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"

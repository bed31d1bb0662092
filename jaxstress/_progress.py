"""A one-line progress bar for chunked runs, on stderr, only when stderr is a terminal.

`Progress` is the `progress(done_paths, total_paths)` callback that `simulate` calls after each chunk. The first
chunk includes compilation, so the speed and ETA are measured from the end of the first chunk once a second one
has finished. Nothing is printed when the stream is not a TTY (logs, pipes, CI) or when disabled (`--quiet`).
"""

from __future__ import annotations

import math
import sys
import time
from typing import TextIO


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """Callable progress reporter: `Progress(quiet=args.quiet)` then pass it as `progress=`; use as a context manager
    (or call `close()`) so the line is ended."""

    def __init__(self, quiet: bool = False, stream: TextIO | None = None, width: int = 24, label: str = "simulating",
                 min_interval: float = 0.1, clock=time.monotonic):
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        try:
            tty = bool(isatty()) if isatty is not None else False
        except (ValueError, OSError):  # closed stream
            tty = False
        self.enabled = tty and not quiet
        self.width = width
        self.label = label
        self.min_interval = min_interval
        self.clock = clock
        self.t0 = clock()
        self.chunks = 0
        self.first: tuple[float, int] | None = None  # (time, paths) at the end of the first chunk
        self._drawn = False
        self._last = -math.inf

    def start(self, total: int) -> None:
        """Show the line before the first chunk (which compiles, so it takes longest)."""
        if self.enabled:
            self._write(f"{self.label}: {total:,} paths, compiling and running the first chunk ...")

    def __call__(self, done: int, total: int) -> None:
        now = self.clock()
        self.chunks += 1
        if self.first is None:
            self.first = (now, done)
        if not self.enabled:
            return
        if done < total and now - self._last < self.min_interval:
            return
        self._last = now
        self._write(self.line(done, total, now))

    def line(self, done: int, total: int, now: float | None = None) -> str:
        now = self.clock() if now is None else now
        frac = min(max(done / total, 0.0), 1.0) if total > 0 else 1.0
        fill = int(round(frac * self.width))
        bar = "#" * fill + "-" * (self.width - fill)
        per_chunk = self.first[1] if self.first else max(done, 1)
        n_chunks = max(1, -(-total // max(per_chunk, 1)))
        t_first, p_first = self.first if self.first else (self.t0, 0)
        if self.chunks >= 2 and now > t_first:
            rate = (done - p_first) / (now - t_first)  # steady speed, without compilation
        else:
            rate = done / max(now - self.t0, 1e-9)
        eta = (total - done) / rate if rate > 0 else math.inf
        tail = f"ETA {_duration(eta)}" if done < total else f"done in {_duration(now - self.t0)}"
        return (f"{self.label} [{bar}] {frac * 100:3.0f}%  chunk {min(self.chunks, n_chunks)}/{n_chunks}  "
                f"{done:,}/{total:,} paths  {rate:,.0f} paths/s  {tail}")

    def _write(self, text: str) -> None:
        try:
            self.stream.write("\r" + text + "\x1b[K")
            self.stream.flush()
            self._drawn = True
        except (OSError, ValueError):
            self.enabled = False

    def close(self) -> None:
        """End the line (the bar stays visible above what follows)."""
        if self._drawn:
            try:
                self.stream.write("\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass
            self._drawn = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

"""How vaekit's progress bars update: often on a terminal; in a log file (stderr not a terminal) a line every 30 s at
most, and none for work shorter than that (no 0% lines)."""
from __future__ import annotations

import sys

LOG_INTERVAL = 30.0  # seconds between a bar's lines in a log file, and before its first


def bar_timing(interval: float = 0.1, delay: float = 0.0) -> dict[str, float]:
    """tqdm's mininterval and delay: `interval` (and `delay` before the bar shows) on a terminal, LOG_INTERVAL in a
    log file."""
    tty = sys.stderr.isatty()
    return {"mininterval": interval if tty else LOG_INTERVAL, "delay": delay if tty else LOG_INTERVAL}

"""What Linux ``/proc`` tells of another process: its CPU time and its memory.

For tests and benchmarks that watch a server running in a process of its own. Elsewhere than
on Linux, or once the process is gone, each reading is 0.
"""

from __future__ import annotations

import os
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process so far, all its threads."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _status_bytes(pid: int, field: str) -> int:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0
    for line in lines:
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024  # the kernel says kB
    return 0


def rss_bytes(pid: int) -> int:
    """The process's resident set size now (``VmRSS``)."""
    return _status_bytes(pid, "VmRSS")


def peak_rss_bytes(pid: int) -> int:
    """The largest resident set size the process has had (``VmHWM``)."""
    return _status_bytes(pid, "VmHWM")

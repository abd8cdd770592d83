"""``make bench``: run every benchmark script in turn (each bounded in time, each stops itself)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import time

# Each entry is a module in this package with a ``main()``; missing ones are skipped.
BENCHMARKS = (
    "benchmarks.signalr_bench",
    "benchmarks.memory_bench",
    "benchmarks.export_bench",
    "benchmarks.scaleout_bench",
    "benchmarks.backplane_bench",
)


def main() -> int:
    failed = []
    for name in BENCHMARKS:
        if importlib.util.find_spec(name) is None:
            print(f"\n== {name}: not present, skipped", flush=True)
            continue
        print(f"\n== {name}", flush=True)
        started = time.monotonic()
        try:
            importlib.import_module(name).main()
        except Exception as exc:  # one broken benchmark must not hide the others' numbers
            print(f"== {name} failed: {type(exc).__name__}: {exc}", flush=True)
            failed.append(name)
        else:
            print(f"== {name} done in {time.monotonic() - started:.0f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

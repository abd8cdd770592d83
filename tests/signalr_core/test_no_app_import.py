"""signalr_core is a library: importing it never imports the application package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_signalr_core_never_imports_exporter_api() -> None:
    code = (
        "import sys, pkgutil, importlib, signalr_core\n"
        "for info in pkgutil.walk_packages(signalr_core.__path__, 'signalr_core.'):\n"
        "    importlib.import_module(info.name)\n"
        "bad = sorted(m for m in sys.modules\n"
        "             if m == 'exporter_api' or m.startswith('exporter_api.'))\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert result.stdout.strip() == ""


def test_public_api_is_curated() -> None:
    import signalr_core

    assert set(signalr_core.__all__) >= {
        "Hub",
        "HubEndpoint",
        "HubOptions",
        "HubException",
        "Principal",
        "hub_method",
        "AuthRequest",
        "HttpTransportType",
    }
    for name in signalr_core.__all__:
        assert hasattr(signalr_core, name), name

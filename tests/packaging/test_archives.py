"""``make dist``'s archives: what each wheel and sdist holds, the dependency between the two
projects, and byte-identical rebuilds for one ``SOURCE_DATE_EPOCH``."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "packages" / "signalr-core"


def _build(project: Path, outdir: Path, *kinds: str) -> dict[str, Path]:
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000"}
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", *kinds, "--outdir", str(outdir), project],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    return {path.name: path for path in outdir.iterdir()}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_signalr_core_archives_are_self_contained_and_reproducible(tmp_path: Path) -> None:
    # python -m build makes the sdist, then the wheel FROM the sdist: the sdist is complete.
    first = _build(CORE, tmp_path / "a")
    assert sorted(first) == ["signalr_core-0.1.0-py3-none-any.whl", "signalr_core-0.1.0.tar.gz"]
    with zipfile.ZipFile(first["signalr_core-0.1.0-py3-none-any.whl"]) as wheel:
        names = wheel.namelist()
        metadata = wheel.read("signalr_core-0.1.0.dist-info/METADATA").decode()
    assert "signalr_core/py.typed" in names
    assert "signalr_core/protocols/messagepack.py" in names
    assert not [n for n in names if n.startswith(("exporter_api", "tests", "examples"))]
    requires = sorted(line for line in metadata.splitlines() if line.startswith("Requires-Dist"))
    assert requires == [
        "Requires-Dist: anyio>=4.4",
        "Requires-Dist: msgspec>=0.19",
        "Requires-Dist: redis>=5.0; extra == 'redis'",
        "Requires-Dist: starlette>=1.0",
    ]
    with tarfile.open(first["signalr_core-0.1.0.tar.gz"]) as sdist:
        members = {m.name.split("/", 1)[1] for m in sdist.getmembers() if "/" in m.name}
        assert all(not m.issym() for m in sdist.getmembers())  # no link out of the archive
    assert {"pyproject.toml", "README.md", "CHANGELOG.md", "LICENSE"} <= members
    assert "signalr_core/__init__.py" in members

    second = _build(CORE, tmp_path / "b")
    assert {name: _digest(p) for name, p in first.items()} == {
        name: _digest(p) for name, p in second.items()
    }


def test_signalr_exporter_wheel_depends_on_signalr_core(tmp_path: Path) -> None:
    built = _build(ROOT, tmp_path, "--wheel")
    (wheel_path,) = built.values()
    with zipfile.ZipFile(wheel_path) as wheel:
        names = wheel.namelist()
        metadata = wheel.read("signalr_exporter-0.1.0.dist-info/METADATA").decode()
    assert "exporter_api/py.typed" in names
    assert "exporter_api/store/migrations/0001_auth.sql" in names
    # The SQLite provider's C reader, compiled by hatch_build.py (its source stays out).
    assert [n for n in names if n.startswith("exporter_api/providers/_sqlitecsv.cpython-")]
    assert "exporter_api/providers/_sqlitecsv.c" not in names
    assert not [n for n in names if n.startswith("signalr_core")]
    assert "Requires-Dist: signalr-core[redis]==0.1.0" in metadata.splitlines()

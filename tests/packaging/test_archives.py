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


def _build(
    project: Path, outdir: Path, *kinds: str, env: dict[str, str] | None = None
) -> dict[str, Path]:
    env = {**os.environ, **(env or {}), "SOURCE_DATE_EPOCH": "1700000000"}
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


def _wheel(built: dict[str, Path]) -> Path:
    (name,) = (n for n in built if n.endswith(".whl"))
    return built[name]


def test_signalr_exporter_wheel_depends_on_signalr_core(tmp_path: Path) -> None:
    # The sdist, then the wheel from it (the C reader compiled there), twice.
    built = _build(ROOT, tmp_path / "a")
    with zipfile.ZipFile(_wheel(built)) as wheel:
        names = wheel.namelist()
        metadata = wheel.read("signalr_exporter-0.1.0.dist-info/METADATA").decode()
    assert "exporter_api/py.typed" in names
    assert "exporter_api/store/migrations/0001_auth.sql" in names
    # The console's vendored browser bundles (`make assets`, git-ignored: wheel artifacts).
    assert "exporter_api/static/vendor/signalr.min.js" in names
    assert "exporter_api/static/vendor/swagger-ui/swagger-ui-bundle.js" in names
    # The SQLite provider's C reader, compiled by hatch_build.py (its source stays out).
    assert [n for n in names if n.startswith("exporter_api/providers/_sqlitecsv.cpython-")]
    assert "exporter_api/providers/_sqlitecsv.c" not in names
    assert not [n for n in names if n.startswith("signalr_core")]
    assert "Requires-Dist: signalr-core[redis]==0.1.0" in metadata.splitlines()
    # Byte-identical rebuilds, the compiled reader included.
    again = _build(ROOT, tmp_path / "b")
    assert {name: _digest(p) for name, p in built.items()} == {
        name: _digest(p) for name, p in again.items()
    }


def test_signalr_exporter_builds_without_a_c_compiler(tmp_path: Path) -> None:
    # No compiler: a pure wheel without the C reader (the provider's Python fallback).
    built = _build(ROOT, tmp_path, "--wheel", env={"CC": "/nonexistent/cc"})
    assert list(built) == ["signalr_exporter-0.1.0-py3-none-any.whl"]
    with zipfile.ZipFile(_wheel(built)) as wheel:
        names = wheel.namelist()
    assert "exporter_api/providers/sqlite.py" in names
    assert "exporter_api/static/vendor/signalr.min.js" in names
    assert not [n for n in names if "_sqlitecsv" in n and not n.endswith(".pyi")]

"""Build hook: compiles the SQLite provider's C reader (exporter_api/providers/_sqlitecsv.c).

It needs a C compiler, the Python headers and SQLite's (Debian: gcc, libsqlite3-dev), and links
against the system's libsqlite3, the library Python's own sqlite3 module uses. The extension is
built next to its source, so an editable install imports it from the work tree; a wheel carries
it (and is then tagged for this platform).

The reader is optional: when it cannot be compiled (no compiler, no ``sqlite3.h``) the build
prints a warning and goes on without it (a pure wheel), and the provider formats CSV rows in
Python instead (`exporter_api.providers.sqlite`: slower, same files).

A wheel's extension is always compiled afresh (never a stale one left in the tree), from the
source's path relative to the project's root with that root mapped away, into a temporary file
renamed into place: two builds of one sdist give the same bytes.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCE = Path("exporter_api") / "providers" / "_sqlitecsv.c"


def build_extension(root: Path, *, force: bool) -> Path | None:
    """Compile the extension in place and return its path relative to ``root``; None (after a
    warning) when it cannot be compiled. Without ``force`` one newer than its source is kept."""
    target = SOURCE.with_name("_sqlitecsv" + str(sysconfig.get_config_var("EXT_SUFFIX")))
    built, source = root / target, root / SOURCE
    if not force and built.exists() and built.stat().st_mtime >= source.stat().st_mtime:
        return target
    partial = target.with_name(target.name + ".tmp")
    cc = shlex.split(os.environ.get("CC") or str(sysconfig.get_config_var("CC") or "cc"))
    command = [
        *cc,
        "-O2",
        "-Wall",
        "-fPIC",
        "-shared",
        f"-ffile-prefix-map={root.resolve()}=.",
        f"-I{sysconfig.get_paths()['include']}",
        str(SOURCE),
        "-lsqlite3",
        "-lm",
        "-o",
        str(partial),
    ]
    try:
        # The build's own compiler, in the project's root (nothing of the path gets in).
        subprocess.run(command, cwd=root, check=True)  # noqa: S603
    except (OSError, subprocess.CalledProcessError) as exc:
        (root / partial).unlink(missing_ok=True)
        print(
            f"WARNING: the SQLite provider's C reader ({SOURCE}) was not compiled ({exc}); "
            "it needs a C compiler, the Python headers and SQLite's (Debian: gcc "
            "libsqlite3-dev). Building without it: SQLite CSV exports then format rows in "
            "Python, several times slower.",
            file=sys.stderr,
        )
        return None
    os.replace(root / partial, built)
    return target


class CustomBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return  # the sdist ships the source
        editable = version == "editable"
        target = build_extension(Path(self.root), force=not editable)
        if target is None:
            return  # a pure wheel: the provider's Python fallback
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        if not editable:
            build_data["force_include"][str(Path(self.root) / target)] = str(target)

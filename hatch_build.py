"""Build hook: compiles the SQLite provider's C reader (exporter_api/providers/_sqlitecsv.c).

It needs a C compiler, the Python headers and SQLite's (Debian: gcc, libsqlite3-dev), and links
against the system's libsqlite3, the library Python's own sqlite3 module uses. The extension is
built next to its source, so an editable install imports it from the work tree; a wheel carries
it (and is then tagged for this platform).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sysconfig
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCE = Path("exporter_api") / "providers" / "_sqlitecsv.c"


def build_extension(root: Path) -> Path:
    """Compile the extension in place (skipped when it is newer than its source)."""
    source = root / SOURCE
    target = source.with_name("_sqlitecsv" + str(sysconfig.get_config_var("EXT_SUFFIX")))
    if target.exists() and target.stat().st_mtime >= source.stat().st_mtime:
        return target
    cc = shlex.split(os.environ.get("CC") or str(sysconfig.get_config_var("CC") or "cc"))
    command = [
        *cc,
        "-O2",
        "-Wall",
        "-fPIC",
        "-shared",
        f"-I{sysconfig.get_paths()['include']}",
        str(source),
        "-lsqlite3",
        "-lm",
        "-o",
        str(target),
    ]
    subprocess.run(command, check=True)  # noqa: S603 - the build's own compiler
    return target


class CustomBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return  # the sdist ships the source
        target = build_extension(Path(self.root))
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        if version != "editable":
            build_data["force_include"][str(target)] = str(target.relative_to(self.root))

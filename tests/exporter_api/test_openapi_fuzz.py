"""Schemathesis fuzzes the real service from its own /api/openapi.json.

`exporter-api serve` runs the demo catalog; the Schemathesis CLI (settings in schemathesis.toml
beside this file: fixed seed, every check) runs its four phases (the document's examples, boundary
values, random and schema-violating requests, chains of calls through the document's links) with
a bounded number of cases per operation. Any server error, undocumented status, header or content
type, response that does not match its schema, refused valid input or accepted invalid input
fails the test.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services import demo_config, exporter_serve

CONFIG = Path(__file__).with_name("schemathesis.toml")
MAX_EXAMPLES = 60  # per operation and phase: ~30 s on 2 cores

pytestmark = pytest.mark.timeout(240)


def _schemathesis() -> list[str]:
    script = Path(sys.executable).with_name("schemathesis")
    return [str(script)] if script.exists() else [sys.executable, "-m", "schemathesis.cli"]


def test_api_conforms_to_its_openapi_document(tmp_path: Path, demo_data_dir: Path) -> None:
    config = demo_config(tmp_path)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "demo").symlink_to(demo_data_dir / "demo", target_is_directory=True)
    log_path = tmp_path / "server.log"
    with exporter_serve(config, data_dir, log_path) as (_, url):
        result = subprocess.run(
            [
                *_schemathesis(),
                *("--config-file", str(CONFIG)),
                "run",
                f"{url}/api/openapi.json",
                *("--max-examples", str(MAX_EXAMPLES)),
                *("--workers", "1", "--request-timeout", "30"),
                "--no-color",
            ],
            cwd=tmp_path,  # its reports and caches stay out of the tree
            capture_output=True,
            text=True,
            timeout=200,
            check=False,
        )
    server_log = log_path.read_text(errors="replace")
    report = (
        f"{result.stdout[-12000:]}\n{result.stderr[-4000:]}\n--- server log\n{server_log[-4000:]}"
    )
    assert result.returncode == 0, report
    generated = re.search(r"(\d+) generated, (\d+) passed", result.stdout)
    assert generated is not None, report
    assert int(generated.group(1)) >= 500, report  # it tested something
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}" in result.stdout, report
    # The contract's run example and the links reached real runs, not only 400s and 404s.
    assert '"event": "run_finished"' in server_log, report
    assert "Traceback" not in server_log, report

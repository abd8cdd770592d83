"""/api/docs in a real browser: Swagger UI from the vendored assets renders every operation of
the served document under the page's CSP, and nothing is fetched from anywhere else.

The scenario is tests/browser/api_docs_scenario.mjs (playwright-core, Debian's chromium).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.services import demo_config, exporter_serve

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

SCENARIO = Path(__file__).with_name("api_docs_scenario.mjs")
CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"


def test_api_docs_page_renders_the_document(tmp_path: Path) -> None:
    node = shutil.which("node")
    assert node is not None, "node is required (apt-get install nodejs)"
    assert CHROMIUM.exists(), "Debian's chromium is required (apt-get install chromium)"
    ARTIFACTS.mkdir(exist_ok=True)
    config = demo_config(tmp_path)
    log_path = tmp_path / "server.log"
    with exporter_serve(config, tmp_path / "data", log_path) as (_, url):
        result = subprocess.run(
            [node, str(SCENARIO)],
            cwd=ROOT,
            env={
                **os.environ,
                "BASE_URL": url,
                "CHROMIUM": str(CHROMIUM),
                "SCREENSHOT": str(ARTIFACTS / "api-docs.png"),
            },
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
    assert result.returncode == 0, (
        f"--- scenario stdout\n{result.stdout}\n--- scenario stderr\n{result.stderr}\n"
        f"--- server log (tail)\n{log_path.read_text(errors='replace')[-4000:]}"
    )
    assert "operations rendered, passed" in result.stdout

"""The console's pure state functions and formatting, tested under Node's own test runner.

`tests/browser/console_state.test.mjs` imports exporter_api/static/state.js and i18n.js (no DOM,
no browser); this wrapper runs it so `make test` and CI include it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

TESTS = Path(__file__).with_name("console_state.test.mjs")


@pytest.mark.timeout(60)
def test_console_state_functions() -> None:
    node = shutil.which("node")
    assert node is not None, "node is required (apt-get install nodejs)"
    result = subprocess.run(
        [node, "--test", str(TESTS)], capture_output=True, text=True, timeout=50, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# fail 0" in result.stdout
    assert "# pass 0" not in result.stdout

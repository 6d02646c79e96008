"""The project's own code passes its linter (ruff, configured in pyproject.toml), so CI keeps it so."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PROJECT_ROOT


def test_ruff_finds_nothing_to_fix():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed in this environment (make test installs it)")
    result = subprocess.run([ruff, "check", "--no-cache", "--output-format", "concise", "."], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr

"""The project's own code passes its linter (ruff) and its type checker (mypy), both configured in pyproject.toml."""

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


def test_mypy_finds_no_type_error_in_the_library_and_the_api():
    mypy = shutil.which("mypy", path=str(Path(sys.executable).parent)) or shutil.which("mypy")
    if mypy is None:
        pytest.skip("mypy is not installed in this environment (make test installs it)")
    result = subprocess.run([mypy, "--no-incremental"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr

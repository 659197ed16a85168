"""The linter: ruff, configured in pyproject.toml ([tool.ruff]), over the whole checkout.

A test rather than a step of .ci/run, so the README's one test command runs it too, locally and
in CI. ruff is pinned in the `test` extra (scripts/setup.sh test installs it)."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    try:
        import ruff  # noqa: F401
    except ImportError:
        pytest.fail("ruff is not installed: run scripts/setup.sh test (the test extra pins it)")
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        pytest.fail(f"ruff check found problems (fix them, or run `.venv/bin/ruff check --fix .` for the fixable "
                    f"ones; docs/developing.md):\n{out.stdout}{out.stderr}", pytrace=False)

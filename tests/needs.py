"""What a few tests need beyond the package's own dependencies (Hugging Face transformers, Chromium
and its driver): missing, such a test skips on a developer's machine but FAILS in CI (``CI=true``,
as ``.ci/run`` runs), where ``scripts/setup.sh test`` installs all of them, so that a broken
install cannot pass CI by skipping what it tests."""

import importlib
import os

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def missing(what: str) -> None:
    """Skip the test for lack of ``what``; in CI, fail it."""
    if in_ci():
        pytest.fail(f"{what}, and CI (CI=true) must run this test: scripts/setup.sh test installs it", pytrace=False)
    pytest.skip(what)


def need_module(name: str):
    """``name`` imported, or :func:`missing`."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        missing(f"{name} is not installed ({e})")

"""The lock, constraints/*.txt (what scripts/setup.sh installs with pip -c), agrees with
pyproject.toml: every locked version of a requirement satisfies it (docs/developing.md)."""

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
FILES = ("test.txt", "torch.txt", "gpu.txt")


def locked(name: str) -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints" / name).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            dist, sep, version = line.partition("==")
            assert sep and version, f"constraints/{name}: {line!r} is not NAME==VERSION"
            pins[canonicalize_name(dist)] = version
    return pins


def test_the_lock_files_pin_each_package_once():
    seen: dict[str, str] = {}
    for name in FILES:
        for dist in locked(name):
            assert dist not in seen, f"{dist} is in constraints/{seen[dist]} and constraints/{name}"
            seen[dist] = name


@pytest.mark.parametrize("extra", [None, "test", "bench", "aws", "hf", "gpu"])
def test_the_locked_versions_satisfy_pyproject(extra):
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = {k: v for name in FILES for k, v in locked(name).items()}
    reqs = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    for req in map(Requirement, reqs):
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} is not locked: run scripts/lock.sh (docs/developing.md)"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"constraints/ locks {name}=={pins[name]}, outside pyproject.toml's {req}: refresh the lock"


def test_setup_refuses_an_unknown_lock_setting_before_writing(tmp_path):
    import os
    import subprocess

    venv = tmp_path / "venv"
    env = {**os.environ, "SETUP_LOCK": "off", "SETUP_VENV": str(venv)}
    done = subprocess.run(["bash", str(REPO / "scripts" / "setup.sh"), "test"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "setup.sh: SETUP_LOCK must be 'none' (install without the lock) or unset, found 'off'"]
    assert not venv.exists()

#!/usr/bin/env bash
# Write constraints/*.txt, the versions scripts/setup.sh installs (pip -c), from a virtual
# environment the tests passed in: its installed versions of raydistill's dependencies (all
# extras but gpu), torch, torchaudio and everything they require, found by walking the installed
# packages' metadata (what `pip freeze` lists, less what nothing here requires, less raydistill).
#
#   scripts/lock.sh                 # from .venv
#   SETUP_VENV=DIR scripts/lock.sh  # from DIR
#
#   constraints/torch.txt  torch, torchaudio and what only they pull in (CUDA libraries, triton):
#                          setup.sh skips it when TORCH_SPEC asks for another build
#   constraints/test.txt   everything else (every mode; bench and aws included)
#   constraints/gpu.txt    faiss-gpu and its CUDA 12 libraries: rewritten only when DIR has faiss-gpu
#                          (a venv set up with `scripts/setup.sh test gpu`), else left as it is
#
# To move to newer versions (docs/developing.md): upgrade in a scratch venv without the lock,
# e.g. `SETUP_VENV=/tmp/v SETUP_LOCK=none scripts/setup.sh test`, run the tests with it, then
# `SETUP_VENV=/tmp/v scripts/lock.sh` and commit the diff.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${SETUP_VENV:-.venv}
"$venv/bin/python" - <<'PY'
import sys, tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
extras = {k: v for k, v in project["optional-dependencies"].items() if k != "gpu"}
base = [*project["dependencies"], *(r for reqs in extras.values() for r in reqs)]
python = ".".join(map(str, sys.version_info[:2]))


def closure(roots, stop=()):
    """The installed distributions the requirements `roots` pull in, not walking into `stop`."""
    found, todo = {}, [Requirement(r) for r in roots]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in stop:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # not needed on this platform / Python
        seen = found.setdefault(name, (dist.version, set()))[1]
        wanted = (set(req.extras) | {""}) - seen
        if not wanted:
            continue
        seen |= wanted
        for dep in map(Requirement, dist.requires or []):
            if dep.marker is None or any(dep.marker.evaluate({"extra": e}) for e in wanted):
                todo.append(dep)
    return {n: v for n, (v, _) in found.items()}


rest = closure(base, stop={"torch", "torchaudio"})
torch = {n: v for n, v in closure(["torch", "torchaudio"]).items() if n not in rest}
gpu = {n: v for n, v in closure(["faiss-gpu"]).items() if n not in rest and n not in torch}
rest.pop("raydistill", None)
assert "torch" in torch and "torchaudio" in torch, "no torch/torchaudio in this venv"

HEAD = ("# The versions the tests passed with (Python {py}, Linux x86_64): scripts/setup.sh installs\n"
        "# with pip -c this file. Written by scripts/lock.sh; refresh: docs/developing.md.\n")
for path, pins, note in (("constraints/test.txt", rest, "raydistill's dependencies, all extras but gpu"),
                         ("constraints/torch.txt", torch, "torch, torchaudio and what only they pull in; "
                                                           "not used with TORCH_SPEC"),
                         ("constraints/gpu.txt", gpu, "`scripts/setup.sh gpu`: faiss-gpu and its CUDA 12 libraries")):
    if not pins:
        print(f"lock.sh: nothing for {path} in this venv: left as it is", file=sys.stderr)
        continue
    lines = [f"{n}=={v}" for n, v in sorted(pins.items())]
    Path(path).write_text(HEAD.format(py=python) + f"# {note}\n" + "\n".join(lines) + "\n")
    print(f"lock.sh: {path}: {len(lines)} packages", file=sys.stderr)
PY

"""cluster.yaml and cluster/local.yaml are valid Ray cluster-launcher configs (Ray's own schema
and checks, after Ray fills in its provider defaults), install raydistill with what Ray's node
provider needs, mount the shared volume or fail, start Ray with token authentication and MLflow
with its database off NFS, and hold no secrets."""

import copy
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIGS = [REPO / "cluster.yaml", REPO / "cluster" / "local.yaml"]

# Importing a module (a top-level name) of an installed distribution that is not among the allowed
# ones fails as if it were not installed: the environment of a config's nodes, inside the test's
# venv (what Ray vendors under its own directory, and the standard library, stay).
ONLY_THESE = """
import importlib.abc, json, sys
from importlib import metadata
from packaging.utils import canonicalize_name
allowed = set(json.loads(sys.argv[1]))
hidden = {module for module, dists in metadata.packages_distributions().items()
          if not any(canonicalize_name(d) in allowed for d in dists)}
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in hidden:
            raise ModuleNotFoundError(f"No module named {name!r} (not installed by the config)", name=name)
sys.meta_path.insert(0, Hide())
from ray.autoscaler._private.providers import _NODE_PROVIDERS
print(_NODE_PROVIDERS[sys.argv[2]]({}).__name__)
"""


def installed_by(config: dict) -> set[str]:
    """The distributions (normalised names) that a config's ``scripts/setup.sh ARGS`` puts in
    the .venv Ray runs from: torch, torchaudio and raydistill's dependencies with the extras its
    arguments select (read from this checkout's pyproject.toml and setup.sh), and all they require."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    (args,) = re.findall(r"scripts/setup\.sh([^;&|]*)", " ".join(config["setup_commands"]))
    extra_of = dict(re.findall(r'^\s*(\w+)\) extras="\$extras,(\w+)"', (REPO / "scripts" / "setup.sh").read_text(), re.M))
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in [*project["dependencies"], "torch", "torchaudio"]]
    wanted += [Requirement(r) for a in args.split() if a in extra_of for r in project["optional-dependencies"][extra_of[a]]]
    found: set[str] = set()
    while wanted:
        req = wanted.pop()
        name = canonicalize_name(req.name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # not in this venv (faiss-gpu): nothing of it can be imported anyway
        extras = sorted(req.extras) or [""]
        if name in found and not req.extras:
            continue
        found.add(name)
        for dep in map(Requirement, dist.requires or []):
            if dep.marker is None or any(dep.marker.evaluate({"extra": e}) for e in extras):
                wanted.append(dep)
    return found


def provider_loads(config: dict) -> subprocess.CompletedProcess:
    """Ray's loader of the config's node provider (what `ray up` and the head's autoscaler call),
    run where only the distributions the config installs can be imported."""
    allowed = sorted(installed_by(config))
    return subprocess.run([sys.executable, "-c", ONLY_THESE, json.dumps(allowed), config["provider"]["type"]],
                          capture_output=True, text=True)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_ray_accepts_the_cluster_config(path):
    """What `ray up` does before it contacts the cloud (ray.autoscaler._private.commands:
    _bootstrap_config): fill in the provider's defaults, load the node provider, validate. The
    provider loads in the environment the config installs on its nodes: Ray's autoscaler runs on
    the head from raydistill's .venv (head_setup_commands replaced Ray's AWS default, the one that
    installs boto3)."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load(path.read_text())
    prepared = prepare_config(copy.deepcopy(config))
    loaded = provider_loads(prepared)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    validate_config(prepared)  # raises on any schema or consistency error
    setup = " ".join(config["setup_commands"])
    assert "scripts/setup.sh" in setup and config["file_mounts"]["~/raydistill"] == "."
    starts = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in starts


def _misspelt_key(config):
    config["available_node_types"]["gpu_worker"]["min_worker"] = 2  # not a field of a node type


def _too_many_min_workers(config):
    config["available_node_types"]["gpu_worker"]["min_workers"] = 20  # the global max_workers is 8


@pytest.mark.parametrize("defect, error, message, where", [
    (_misspelt_key, jsonschema.ValidationError, "Additional properties are not allowed ('min_worker' was unexpected)",
     ["available_node_types", "gpu_worker"]),
    (_too_many_min_workers, ValueError,
     "The specified global `max_workers` is smaller than the sum of `min_workers` of all the available node types.",
     None),
], ids=["misspelt-key", "min-workers-over-max"])
def test_the_validator_rejects_a_broken_config_for_its_defect(defect, error, message, where):
    """Each defect is refused by the check meant for it (Ray's JSON schema, then its consistency
    checks), not by whatever error comes first."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load(CONFIGS[0].read_text())
    defect(config)
    prepared = prepare_config(copy.deepcopy(config))
    with pytest.raises(error) as raised:
        validate_config(prepared)
    assert type(raised.value) is error
    if where is None:
        assert str(raised.value) == message
    else:  # the schema names the offending field and where it is
        assert raised.value.message == message and list(raised.value.absolute_path) == where


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_no_credentials_in_the_cluster_config(path):
    text = path.read_text()
    assert not re.search(r"AKIA[0-9A-Z]{16}", text)  # AWS access key ids
    assert not re.search(r"(?i)(secret|password|token)\s*[:=]", text)
    assert "PRIVATE KEY" not in text


def _run_on_a_node(command: str, tmp_path: Path, mount_rc: int = 0) -> tuple[int, str, list[str]]:
    """``command`` as a node's shell runs it, with sudo, mount and mountpoint replaced by stubs
    that log their arguments (the volume is not mounted yet; ``mount`` exits ``mount_rc``):
    exit status, stderr, and the logged calls."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir(exist_ok=True)
    log.write_text("")
    stubs = {"sudo": 'echo "sudo $*" >> "$LOG"; [ "$1" != mount ] || exit "$MOUNT_RC"',
             "mount": 'echo "mount $*" >> "$LOG"; exit "$MOUNT_RC"', "mountpoint": "exit 1"}
    for name, body in stubs.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "LOG": str(log), "MOUNT_RC": str(mount_rc)}
    out = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, cwd=tmp_path)
    return out.returncode, out.stderr, log.read_text().splitlines()


@pytest.mark.parametrize("path, variable, example", [
    (CONFIGS[0], "EFS", "fs-EXAMPLE.efs.us-west-2.amazonaws.com"), (CONFIGS[1], "SHARED", "192.0.2.10:/srv/raydistill")],
    ids=lambda p: getattr(p, "name", None))
def test_the_shared_volume_is_mounted_or_the_setup_fails(path, variable, example, tmp_path):
    """The file system is named once, in the command (typed where the user edits the file, not
    looked up on the node); a failed mount fails the node's setup; the runs directory is made
    with sudo on the root-owned volume and given to the ssh user."""
    config = yaml.safe_load(path.read_text())
    mount = config["setup_commands"][0]
    assert f"{variable}={example};" in mount and mount.count(example) == 1
    if "EXAMPLE" in example:  # left as shipped: refused with what to edit
        rc, err, calls = _run_on_a_node(mount, tmp_path)
        assert rc != 0 and f"set {variable}" in err and not any("mount" in c for c in calls)
    mine = mount.replace(example, "fs-0123.efs.example.com" if "EXAMPLE" in example else "10.1.2.3:/export")
    rc, _, calls = _run_on_a_node(mine, tmp_path, mount_rc=32)
    assert rc != 0, "a failed mount must fail the setup"
    rc, _, calls = _run_on_a_node(mine, tmp_path)
    assert rc == 0 and any(c.startswith("sudo mount -t nfs4") and c.endswith(" /mnt/shared") for c in calls), calls
    rc, _, calls = _run_on_a_node(" && ".join(config["head_setup_commands"]), tmp_path)
    assert rc == 0 and calls == ["sudo mkdir -p /mnt/shared/runs", f"sudo chown {os.getuid()}:{os.getgid()} /mnt/shared/runs"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_ray_runs_with_token_auth_and_mlflow_keeps_its_database_off_nfs(path):
    """`ray start` of Ray 2.60 turns token authentication on only with RAY_AUTH_MODE=token (or a
    token already on the machine), and then refuses to start without a token: the head makes one
    first and the workers install the head's copy before they join. MLflow's SQLite database is
    on the head's own disk (SQLite over NFS is unsafe), its artifacts on the shared volume."""
    config = yaml.safe_load(path.read_text())
    head, workers = config["head_start_ray_commands"], config["worker_start_ray_commands"]
    for commands, token in ((head, "ray get-auth-token --generate"), (workers, "/mnt/shared/.ray-auth-token ~/.ray/auth_token")):
        (start,) = [i for i, c in enumerate(commands) if " start " in f"{c} "]
        assert commands[start].startswith("RAY_AUTH_MODE=token "), commands[start]
        assert any(token in c for c in commands[:start]), commands
    (mlflow,) = [c for c in head if "mlflow server" in c]
    store = re.search(r"--backend-store-uri (\S+)", mlflow)[1]
    assert store.startswith("sqlite:///$HOME/") and "/mnt/shared" not in store
    assert "--artifacts-destination /mnt/shared/" in mlflow

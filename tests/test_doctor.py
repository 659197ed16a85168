"""`raydistill doctor`'s checks from what nodes report (no cluster needed): torch builds that
disagree, a GPU torch cannot use, faiss that does not import or is a CPU build on a GPU node,
a SQLite MLflow store on a network file system, Ray without token authentication, free space.
On a real multi-node cluster, with a node that cannot see the workdir: test_cluster.py."""

import pytest

from raydistill import doctor

NODE = {"NodeID": "a" * 56, "NodeManagerAddress": "10.0.0.2", "Resources": {"CPU": 8.0, "GPU": 1.0, "memory": 1e9,
                                                                           "node:10.0.0.2": 1.0}}
OTHER = {"NodeID": "b" * 56, "NodeManagerAddress": "10.0.0.3", "Resources": {"CPU": 4.0}}
GOOD = {"torch": "2.14.1+cu130", "cuda_build": "13.0", "torchaudio": "2.11.0+cu130", "os_gpus": 1, "driver": "580.1",
        "cuda_problem": None, "faiss": "1.15.1", "faiss_gpu": True, "workdir_read": None, "workdir_write": None}


def by_name(checks):
    return {c.name: c for c in checks}


def test_agreeing_nodes_pass():
    checks = by_name(doctor.software_checks([(NODE, GOOD), (OTHER, {**GOOD, "os_gpus": 0, "faiss_gpu": False})]))
    assert {c.status for c in checks.values()} == {"ok"}, checks
    assert checks["torch"].what == "torch 2.14.1+cu130 (CUDA 13.0 build) + torchaudio 2.11.0+cu130 on all 2 node(s)"


@pytest.mark.parametrize("change, name, status, words", [
    ({"torch": "2.10.0+cu128", "cuda_build": "12.8"}, "torch", "FAIL", "the nodes disagree"),
    ({"torchaudio_error": "ModuleNotFoundError: No module named 'torchaudio'"}, "torch", "FAIL", "No module named"),
    ({"cuda_problem": "the OS shows an NVIDIA GPU (GPU 0: A10G) but torch cannot use it"}, "cuda", "FAIL", "A10G"),
    ({"faiss_error": "RuntimeError: faiss-gpu installed but nvidia-cuda-runtime-cu12 is missing"}, "faiss", "FAIL",
     "nvidia-cuda-runtime-cu12"),
    ({"faiss_gpu": False}, "faiss", "warn", "k-means runs on their CPUs"),
], ids=["torch-disagrees", "no-torchaudio", "gpu-torch-cannot-use", "faiss-load-error", "cpu-faiss-on-gpu-node"])
def test_a_node_with_a_problem_is_named(change, name, status, words):
    checks = by_name(doctor.software_checks([(NODE, {**GOOD, **change}), (OTHER, {**GOOD, "os_gpus": 0})]))
    assert checks[name].status == status and words in checks[name].what, checks[name]
    assert "node aaaaaaaaaaaa (10.0.0.2; CPU 8, GPU 1)" in checks[name].what


def test_a_node_that_does_not_answer_fails():
    checks = by_name(doctor.software_checks([(NODE, GOOD), (OTHER, {"error": "did not answer in 180 s"})]))
    assert checks["nodes"].status == "FAIL" and "node bbbbbbbbbbbb (10.0.0.3; CPU 4): did not answer" in checks["nodes"].what


def test_sqlite_on_a_network_file_system_fails(tmp_path, monkeypatch):
    mounts = tmp_path / "mounts"
    shared = tmp_path / "mnt shared"
    shared.mkdir()
    mounts.write_text(f"/dev/root / ext4 rw 0 0\n"
                      f"fs-1.efs.us-west-2.amazonaws.com:/ {str(shared).replace(' ', chr(92) + '040')} nfs4 rw 0 0\n")
    monkeypatch.setattr(doctor, "MOUNTS", mounts)
    check = doctor.mlflow_check(f"sqlite:///{shared}/runs/mlflow.db")  # not created yet: its directory decides
    assert check.status == "FAIL" and f"network file system (nfs4 at {shared})" in check.what
    assert doctor.mlflow_check(f"sqlite:///{tmp_path}/mlflow.db") == doctor.Check(
        "mlflow", "ok", f"SQLite store {tmp_path}/mlflow.db on a local file system (ext4)")
    assert doctor.mlflow_check("http://127.0.0.1:9/").status == "FAIL"  # nothing answers there


def test_ray_without_token_auth_is_a_warning_for_a_remote_cluster():
    """Ray reads RAY_AUTH_MODE once per process: each mode in a process of its own."""
    import json
    import os
    import subprocess
    import sys

    code = ("import json; from raydistill.doctor import auth_check; "
            "print(json.dumps([auth_check('10.0.0.1:6379').status, auth_check(None).status]))")
    seen = {}
    for mode in ("disabled", "token"):
        out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "RAY_AUTH_MODE": mode},
                             capture_output=True, text=True, check=True)
        seen[mode] = json.loads(out.stdout)
    assert seen == {"disabled": ["warn", "ok"], "token": ["ok", "ok"]}


def test_free_space_against_the_need(tmp_path):
    assert doctor.space_check(tmp_path, None).status == "ok"
    assert doctor.space_check(tmp_path, 10**18).status == "FAIL"

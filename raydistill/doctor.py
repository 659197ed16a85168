"""``raydistill doctor``: the pre-flight check of a cluster, before a search that costs GPU-days.

One line per check (``ok``, ``warn`` or ``FAIL`` and what was found); ``search`` runs the same
checks before any work and stops on a failure. What is checked, and how (docs/cluster.md):

* **every node's software**: a Ray task pinned to each alive node (NodeAffinitySchedulingStrategy,
  no CPU asked, so busy or CPU-less nodes answer too) reports torch, torchaudio, their CUDA build,
  the NVIDIA driver, and faiss and its build. The nodes must agree on torch and torchaudio; a GPU
  the OS shows that torch cannot use is a failure (``raydistill.gpu.cuda_problem``: torch would
  run on the CPU without a word); a faiss that does not import is a failure, a CPU build of faiss
  on a GPU node a warning (k-means on its CPU).
* **the workdir**: this process writes a file with a random token into it; every node reads it
  and writes its own token file back, which this process reads. A node that cannot see or
  write the workdir is named: its node id, address and resources.
* **MLflow**: the URI answers (a server) or is a usable database; a SQLite store on a network
  file system (NFS, EFS, CIFS, FUSE: the file system of its path in /proc/mounts) is a failure:
  SQLite's locking is not safe there.
* **Ray's token authentication**: off on a cluster reached by address is a warning (anyone who
  reaches its ports can run code there).
* **free space** in the workdir, against ``need`` bytes when given (``--need``).
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from raydistill.errors import UserError
from raydistill.gpu import cuda_problem, driver_version, os_gpus
from raydistill.utils import log, one_line

NETWORK_FILE_SYSTEMS = ("nfs", "nfs4", "efs", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs", "lustre")
MOUNTS = Path("/proc/mounts")
NODE_TIMEOUT = 180.0  # seconds a node has to answer (its first worker process imports torch and faiss)


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | warn | FAIL
    what: str

    def line(self) -> str:
        return f"{self.status:<4} {self.name}: {self.what}"


def probe(workdir: str, token_name: str, token: str, node_id: str) -> dict:
    """What one node reports (run on it): its software and GPUs, and its view of the workdir
    (whether it reads ``token`` in ``token_name`` there, and writes ``token_name.<node_id>``)."""
    info: dict = {"host": socket.gethostname()}
    try:
        import torch

        info.update(torch=torch.__version__, cuda_build=torch.version.cuda, torch_gpus=torch.cuda.device_count()
                    if torch.cuda.is_available() else 0)
    except Exception as e:  # noqa: BLE001 - reported as the node's failure
        info["torch_error"] = one_line(e, first_line=True, with_type=True)
    try:
        import torchaudio

        info["torchaudio"] = torchaudio.__version__
    except Exception as e:  # noqa: BLE001
        info["torchaudio_error"] = one_line(e, first_line=True, with_type=True)
    info.update(os_gpus=len(os_gpus()), driver=driver_version())
    try:
        info["cuda_problem"] = cuda_problem()
    except Exception as e:  # noqa: BLE001
        info["cuda_problem"] = one_line(e, first_line=True, with_type=True)
    try:
        import faiss

        info.update(faiss=getattr(faiss, "__version__", "?"), faiss_gpu=hasattr(faiss, "StandardGpuResources"))
    except Exception as e:  # noqa: BLE001 - faiss-gpu without its CUDA libraries raises RuntimeError
        info["faiss_error"] = one_line(e, first_line=True, with_type=True)
    root = Path(workdir)
    try:
        seen = (root / token_name).read_text()
        info["workdir_read"] = None if seen == token else f"{root / token_name} holds another token"
    except OSError as e:
        info["workdir_read"] = f"cannot read {root / token_name}: {e.strerror or e}"
    try:
        (root / f"{token_name}.{node_id}").write_text(token)
        info["workdir_write"] = None
    except OSError as e:
        info["workdir_write"] = f"cannot write in {root}: {e.strerror or e}"
    return info


def describe_node(node: dict) -> str:
    """``node 1a2b3c4d5e6f (10.0.0.2; CPU 8, GPU 1, …; label k=v)``: which node, for a person."""
    resources = {k: v for k, v in node.get("Resources", {}).items()
                 if not k.startswith(("node:", "memory", "object_store_memory", "accelerator_type"))}
    parts = [", ".join(f"{k} {v:g}" for k, v in sorted(resources.items()))]
    labels = {k: v for k, v in (node.get("Labels") or {}).items() if not k.startswith("ray.io/")}
    if labels:
        parts.append("labels " + ", ".join(f"{k}={v}" for k, v in sorted(labels.items())))
    return f"node {node['NodeID'][:12]} ({node.get('NodeManagerAddress', '?')}; {'; '.join(p for p in parts if p)})"


def node_reports(ray, workdir: Path, timeout: float = NODE_TIMEOUT) -> list[tuple[dict, dict]]:
    """``(node, report)`` for every alive node, each from a task pinned to it; a node that does
    not answer in ``timeout`` seconds reports ``{"error": ...}``. The token files are removed."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    token, name = secrets.token_hex(16), f".doctor-{secrets.token_hex(4)}"
    written = workdir / name
    try:
        written.write_text(token)
    except OSError as e:
        raise UserError(f"workdir {workdir} is not writable here: {e.strerror or e}") from None
    try:
        if len(nodes) == 1 and nodes[0]["NodeID"] == ray.get_runtime_context().get_node_id():
            return [(nodes[0], probe(str(workdir), name, token, nodes[0]["NodeID"]))]  # this machine alone: no task
        task = ray.remote(num_cpus=0, max_retries=0)(probe)
        refs = [task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(str(workdir), name, token, n["NodeID"]) for n in nodes]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout)
        reports = []
        for node, ref in zip(nodes, refs):
            if ref not in ready:
                ray.cancel(ref, force=True)
                report = {"error": f"did not answer in {timeout:.0f} s"}
            else:
                try:
                    report = ray.get(ref)
                except Exception as e:  # noqa: BLE001 - the node's failure, reported with its name
                    report = {"error": one_line(e, first_line=True, with_type=True)}
            if "error" not in report and report.get("workdir_write") is None:
                back = workdir / f"{name}.{node['NodeID']}"
                if not (back.is_file() and back.read_text() == token):
                    report["workdir_write"] = f"what it wrote in {workdir} is not there for this machine"
            reports.append((node, report))
        return reports
    finally:
        for path in [written, *workdir.glob(f"{name}.*")]:
            path.unlink(missing_ok=True)


def software_checks(reports: list[tuple[dict, dict]]) -> list[Check]:
    """torch/torchaudio/CUDA agreement, GPUs torch can use, faiss and its build, on every node."""
    checks, n = [], len(reports)
    broken = [f"{describe_node(node)}: {r['error']}" for node, r in reports if "error" in r]
    if broken:
        checks.append(Check("nodes", "FAIL", "; ".join(broken)))
    reports = [(node, r) for node, r in reports if "error" not in r]
    missing = [f"{describe_node(node)}: {r.get('torch_error') or r.get('torchaudio_error')}"
               for node, r in reports if "torch_error" in r or "torchaudio_error" in r]
    builds = {(r.get("torch"), r.get("cuda_build"), r.get("torchaudio")) for _, r in reports if "torch" in r}
    if missing:
        checks.append(Check("torch", "FAIL", "; ".join(missing)))
    elif len(builds) > 1:
        by_node = "; ".join(f"{describe_node(node)}: torch {r['torch']} (CUDA {r['cuda_build']}) + torchaudio "
                            f"{r['torchaudio']}" for node, r in reports)
        checks.append(Check("torch", "FAIL", f"the nodes disagree: {by_node}"))
    elif builds:
        torch, cuda, audio = next(iter(builds))
        checks.append(Check("torch", "ok", f"torch {torch} ({f'CUDA {cuda}' if cuda else 'CPU'} build) + torchaudio "
                                           f"{audio} on all {n} node(s)"))
    cuda = [f"{describe_node(node)}: {r['cuda_problem']}" for node, r in reports if r.get("cuda_problem")]
    gpu_nodes = [r for _, r in reports if r.get("os_gpus")]
    if cuda:
        checks.append(Check("cuda", "FAIL", "; ".join(cuda)))
    elif gpu_nodes:
        drivers = sorted({r.get("driver") or "?" for r in gpu_nodes})
        checks.append(Check("cuda", "ok", f"{len(gpu_nodes)} GPU node(s), driver {', '.join(drivers)}: "
                                          "torch uses their GPUs"))
    else:
        checks.append(Check("cuda", "ok", "no GPU on any node up now (GPU nodes that an autoscaler adds are "
                                          "checked when they are up: run doctor again then)"))
    faiss_errors = [f"{describe_node(node)}: {r['faiss_error']}" for node, r in reports if "faiss_error" in r]
    cpu_faiss = [describe_node(node) for node, r in reports if r.get("os_gpus") and r.get("faiss_gpu") is False]
    if faiss_errors:
        checks.append(Check("faiss", "FAIL", "does not import: " + "; ".join(faiss_errors)))
    elif cpu_faiss:
        checks.append(Check("faiss", "warn", "a CPU build on GPU node(s), k-means runs on their CPUs "
                                             f"(scripts/setup.sh gpu): {'; '.join(cpu_faiss)}"))
    elif reports:
        kinds = sorted({("GPU" if r.get("faiss_gpu") else "CPU") + " build " + str(r.get("faiss")) for _, r in reports})
        checks.append(Check("faiss", "ok", f"{', '.join(kinds)} on all {n} node(s)"))
    return checks


def workdir_check(workdir: Path, reports: list[tuple[dict, dict]]) -> Check:
    blind = [f"{describe_node(node)}: {r.get('workdir_read') or r.get('workdir_write')}"
             for node, r in reports if "error" not in r and (r.get("workdir_read") or r.get("workdir_write"))]
    if blind:
        return Check("workdir", "FAIL", f"{workdir} is not shared with every node (every node must see the same "
                                        f"directory: a shared file system): " + "; ".join(blind))
    return Check("workdir", "ok", f"{workdir} read and written by all {len(reports)} node(s)")


def file_system(path: Path) -> tuple[str, str]:
    """``(type, mount point)`` of the file system that holds (or will hold) ``path``, from
    /proc/mounts: the longest mount point above it."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    path = path.resolve()
    try:
        mounts = MOUNTS.read_text()
    except OSError:
        return "unknown", "/"
    best = ("unknown", "/")
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].encode().decode("unicode_escape")  # /proc/mounts writes a space as \040
        if (path == Path(point) or Path(point) in path.parents) and len(point) >= len(best[1]):
            best = (fields[2], point)
    return best


def is_network_file_system(fs_type: str) -> bool:
    return fs_type.split(".")[0] in NETWORK_FILE_SYSTEMS or fs_type.startswith("fuse")


def mlflow_check(uri: str) -> Check:
    from raydistill.prepare import check_mlflow_uri  # lazy: loads torch; probe() may run where torch is broken

    try:
        check_mlflow_uri(uri)
    except UserError as e:
        return Check("mlflow", "FAIL", str(e))
    if not uri.startswith("sqlite:///"):
        return Check("mlflow", "ok", f"{uri} answers")
    path = Path(uri[len("sqlite:///"):])
    fs_type, point = file_system(path)
    if is_network_file_system(fs_type):
        return Check("mlflow", "FAIL", f"the SQLite store {path} is on a network file system ({fs_type} at {point}): "
                                       "SQLite's file locking is not safe there; run an MLflow server with its "
                                       "database on a local disk and pass --mlflow-uri http://… (docs/cluster.md)")
    return Check("mlflow", "ok", f"SQLite store {path} on a local file system ({fs_type})")


def auth_check(address: Optional[str]) -> Check:
    try:
        from ray._raylet import AuthenticationMode, get_authentication_mode

        on = get_authentication_mode() == AuthenticationMode.TOKEN
    except ImportError:  # a Ray without token authentication
        on = False
    if on:
        return Check("ray-auth", "ok", "token authentication on")
    if address in (None, "local") and not os.environ.get("RAY_ADDRESS"):  # not a job on a cluster either
        return Check("ray-auth", "ok", "token authentication off (a local cluster started here, on 127.0.0.1)")
    return Check("ray-auth", "warn", f"token authentication is off on the cluster at {address}: anyone who reaches "
                                     "its ports can run code there (start every node with RAY_AUTH_MODE=token: "
                                     "docs/cluster.md)")


def space_check(workdir: Path, need: Optional[int]) -> Check:
    from raydistill.prepare import available_bytes, human_bytes  # lazy: loads torch (see mlflow_check)

    free = available_bytes(workdir)
    if need is not None and free < need:
        return Check("disk", "FAIL", f"{human_bytes(free)} free in {workdir}, the plan needs {human_bytes(need)}")
    return Check("disk", "ok", f"{human_bytes(free)} free in {workdir}" + (f" (needs {human_bytes(need)})" if need else ""))


def run_checks(ray, workdir: Path, mlflow_uri: str, address: Optional[str], need: Optional[int] = None,
               timeout: float = NODE_TIMEOUT) -> list[Check]:
    """Every check, against the Ray cluster ``ray`` is connected to."""
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    reports = node_reports(ray, workdir, timeout=timeout)
    checks = [Check("ray", "ok", f"Ray {ray.__version__}, {len(reports)} node(s): "
                                 + "; ".join(describe_node(node) for node, _ in reports))]
    checks += software_checks(reports)
    checks += [workdir_check(workdir, reports), mlflow_check(mlflow_uri), auth_check(address), space_check(workdir, need)]
    return checks


def preflight(ray, workdir: Path, mlflow_uri: str, address: Optional[str]) -> list[Check]:
    """The checks a search runs before any work: each line logged, a UserError on a failure."""
    checks = run_checks(ray, workdir, mlflow_uri, address)
    for check in checks:
        if check.status != "ok":
            log(f"pre-flight {check.line()}")
    failed = [c for c in checks if c.status == "FAIL"]
    if failed:
        raise UserError(f"pre-flight check failed: {failed[0].line()}"
                        + (f" (and {len(failed) - 1} more: run `raydistill doctor`)" if len(failed) > 1 else ""))
    return checks


def as_json(checks: list[Check]) -> dict:
    return {"ok": not any(c.status == "FAIL" for c in checks), "checks": [asdict(c) for c in checks]}

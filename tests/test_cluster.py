"""A real multi-node Ray cluster on this machine: a head (`ray start --head`, no CPUs, the
dashboard for job submission) and two one-CPU worker nodes, each its own `ray start --block`
process group, so killing a group is a node dying (raylet and its workers at once).

Against it: a smoke search submitted with `ray job submit`; a search whose driver is killed
and continued with `--resume`; one stopped with Ctrl-C and continued; a search during which
the node running a trial is killed; `raydistill doctor` and a search's own pre-flight check
with a node that does not see the workdir.
Every check ends in MLflow: exactly one child run per trial, none missing, none duplicated.

The session's local cluster (conftest) is stopped first: two Ray clusters on one machine
must never run at once. All three searches share one workdir, so the corpus and the smoke
teacher are built once.
"""

import contextlib
import json
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
# Token authentication, as the cluster configs run it: Ray 2.60's `ray start --head` turns it on
# with RAY_AUTH_MODE=token (without it, only if a token is already on the machine), and every
# process that talks to the cluster (nodes, `ray job`, drivers) must agree on the mode and hold
# the cluster's token. `ray start` does not make one: a fresh machine has no ~/.ray/auth_token,
# so the tests bring their own (an existing RAY_AUTH_TOKEN is kept).
ENV = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "RAY_AUTH_MODE": "token",
       "RAY_AUTH_TOKEN": os.environ.get("RAY_AUTH_TOKEN") or secrets.token_hex(32)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float, what: str, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _processes() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, process group) of every process, from /proc."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            table[int(stat.parent.name)] = (int(fields[1]), int(fields[2]))
    return table


def _descendants(pids: set[int]) -> set[int]:
    table, found = _processes(), set()
    frontier = set(pids)
    while frontier:
        frontier = {pid for pid, (ppid, _) in table.items() if ppid in frontier} - found
        found |= frontier
    return found


class Nodes:
    """A head and worker nodes started with `ray start --block`, one process group each."""

    def __init__(self, workers: int = 2):
        self.temp = tempfile.mkdtemp(prefix="rdray", dir="/tmp")  # short: Ray's socket paths
        self.port, self.dashboard_port = _free_port(), _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"
        self.head, self.workers = None, []
        try:
            self.head = self._start(0, ["--head", "--port", str(self.port), "--num-cpus", "0",
                                        "--dashboard-host", "127.0.0.1", "--dashboard-port", str(self.dashboard_port),
                                        "--include-dashboard", "true", "--disable-usage-stats"])
            _wait(self._listening, 120, "the Ray head")
            for _ in range(workers):  # one at a time: nodes starting together race for ports
                self.add_worker()
        except BaseException:
            self.stop()
            raise

    def _start(self, index: int, args, wrap=()) -> subprocess.Popen:
        # Every node on this machine gets its own ports (Ray's defaults would collide).
        ports = ["--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
                 "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port"]
        explicit = [x for flag in ports for x in (flag, str(_free_port()))]
        low = 20_000 + 1_000 * index
        explicit += ["--min-worker-port", str(low), "--max-worker-port", str(low + 999)]
        return subprocess.Popen([*wrap, RAY, "start", "--block", "--temp-dir", self.temp, *explicit, *args], env=ENV,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def add_worker(self, *args, wrap=()) -> subprocess.Popen:
        """A one-CPU worker node, returned once the cluster counts its CPU; ``args``: more
        `ray start` flags, ``wrap``: a command that runs `ray start ...` (its arguments)."""
        before = self.cpus()
        node = self._start(len(self.workers) + 1, ["--address", self.address, "--num-cpus", "1", *args], wrap)
        self.workers.append(node)
        _wait(lambda: self.cpus() > before, 180, "a new worker node")
        return node

    def _listening(self) -> bool:
        from raydistill.errors import UserError
        from raydistill.search.cluster import check_address

        try:
            check_address(self.address, timeout=1)
            return True
        except UserError:
            return False

    def cpus(self) -> float:
        out = subprocess.run([RAY, "status", "--address", self.address], env=ENV, capture_output=True, text=True)
        line = next((x for x in out.stdout.splitlines() if x.strip().endswith("CPU")), "")
        return float(line.split("/")[-1].split()[0]) if "/" in line else 0.0

    def kill(self, node: subprocess.Popen) -> None:
        """The node dies at once: SIGKILL to its `ray start`, raylet, agents and every worker
        process under them (Ray puts workers in process groups of their own)."""
        group = {pid for pid, (_, pgid) in _processes().items() if pgid == node.pid}
        for pid in group | _descendants(group):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        node.wait()

    def node_of(self, pid: int) -> subprocess.Popen:
        """The node whose process tree holds ``pid``."""
        table = _processes()
        while pid > 1:
            for node in [self.head, *self.workers]:
                if table.get(pid, (0, 0))[1] == node.pid:
                    return node
            pid = table.get(pid, (1, 0))[0]
        raise LookupError("process not under any node of this cluster")

    def stop(self) -> None:
        for node in [*self.workers, self.head]:
            if node is not None and node.poll() is None:
                self.kill(node)  # its worker processes too, not only its process group
        shutil.rmtree(self.temp, ignore_errors=True)
        current = Path("/tmp/ray/ray_current_cluster")  # stale, it would mislead a later `ray.init`
        if current.is_file() and self.address.split(":")[1] in current.read_text():
            current.unlink()


@pytest.fixture(scope="module")
def nodes():
    import ray

    if ray.is_initialized():
        ray.shutdown()  # the session's local cluster; the next module's ray_cluster restarts it
    cluster = Nodes(workers=2)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    """dice.yaml with longer smoke trials: four checkpoints each, so a fault lands between two."""
    raw = yaml.safe_load((REPO / "search_spaces" / "dice.yaml").read_text())
    raw["smoke"] = {"optim": {"max_steps": 16, "batch_seconds": 12}, "eval_every": 4}
    path = tmp_path_factory.mktemp("space") / "cluster.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The searches' shared workdir, its MLflow store created up front: the tests poll it while
    a driver writes, and two processes creating one SQLite store at once race in its migrations."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("cluster") / "runs"
    path.mkdir()
    MlflowClient(f"sqlite:///{path / 'mlflow.db'}").search_experiments()
    return path


def search_cmd(space, workdir, experiment, name, *extra):
    """A smoke search; ASHA may stop a trial only at its last evaluation, so a fault injected
    after any checkpoint finds the trial still running."""
    return [sys.executable, "-m", "raydistill", "search", "--space", str(space), "--smoke", "--grace-period", "4",
            "--confirm", "0", "--workdir", str(workdir), "--experiment", experiment, "--name", name, *extra]


def runs_of(workdir, experiment, kind="trial"):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return client, []
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`raydistill.kind` = '{kind}'",
                              max_results=1000)
    return client, runs


def assert_once_per_trial(workdir, experiment, trials: int):
    """Exactly ``trials`` child runs, one per Tune trial id, all ended (none left RUNNING)."""
    client, runs = runs_of(workdir, experiment)
    ids = [r.data.tags["raydistill.trial_id"] for r in runs]
    assert len(ids) == trials and len(set(ids)) == trials, ids
    assert all(r.info.status == "FINISHED" for r in runs), [(r.info.run_name, r.info.status) for r in runs]
    assert all(r.data.tags["raydistill.status"] in ("completed", "stopped") for r in runs)
    assert all(math.isfinite(r.data.metrics["overall_score"]) for r in runs)  # stopped ones scored from their checkpoint
    _, searches = runs_of(workdir, experiment, kind="search")
    assert len(searches) == 1 and searches[0].info.status == "FINISHED"
    return client, runs


def resumed_steps(client, run) -> list[float]:
    return [m.value for m in client.get_metric_history(run.info.run_id, "resumed_from_step")]


def test_a_search_submitted_with_ray_job_submit(nodes, space, workdir):
    entrypoint = search_cmd(space, workdir, "jobs", "submitted", "--trials", "2")
    started = time.monotonic()
    out = subprocess.run([RAY, "job", "submit", "--address", nodes.dashboard, "--submission-id", "raydistill-smoke",
                          "--", *entrypoint], env=ENV, capture_output=True, text=True, timeout=900)
    print(f"ray job submit: {time.monotonic() - started:.0f} s")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "succeeded" in out.stdout
    status = subprocess.run([RAY, "job", "status", "--address", nodes.dashboard, "raydistill-smoke"], env=ENV,
                            capture_output=True, text=True)
    assert "succeeded" in status.stdout  # `ray job status`: "Job 'raydistill-smoke' succeeded"
    assert_once_per_trial(workdir, "jobs", 2)


def _running_trial_with_checkpoint(workdir, experiment):
    """A trial run that has reported (so has a checkpoint) and is still running, or None."""
    _, runs = runs_of(workdir, experiment)
    return next((r for r in runs if r.info.status == "RUNNING" and "loss" in r.data.metrics), None)


def _start_driver(command, log):
    """A search driver in its own process group, as a terminal runs it; its output goes to ``log``."""
    return subprocess.Popen(command, env=ENV, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def _assert_running(driver, log, before: str):
    assert driver.poll() is None, f"the search ended before {before}: " + log.read_text()[-2000:]


def test_a_killed_driver_resumes_without_duplicate_runs(nodes, space, workdir, tmp_path):
    args = ("--trials", "3", "--max-concurrent", "1", "--address", nodes.address)
    log = tmp_path / "driver.log"
    driver = _start_driver(search_cmd(space, workdir, "resume", "resumed", *args), log)
    try:
        # kill it while the second trial runs, past its first checkpoint (so Tune has saved it)
        def second_trial_mid_run():
            _assert_running(driver, log, "its driver could be killed")
            _, runs = runs_of(workdir, "resume")
            done = [r for r in runs if r.info.status == "FINISHED"]
            return done and _running_trial_with_checkpoint(workdir, "resume")

        victim = _wait(second_trial_mid_run, 600, "the second trial's first checkpoint", every=0.5)
        assert driver.poll() is None
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    killed_at = time.monotonic()
    out = subprocess.run(search_cmd(space, workdir, "resume", "resumed", "--resume", *args), env=ENV,
                         capture_output=True, text=True, timeout=900)
    print(f"resume after a driver kill: {time.monotonic() - killed_at:.0f} s to the end of the search")
    assert out.returncode == 0, out.stderr[-3000:]
    client, runs = assert_once_per_trial(workdir, "resume", 3)
    (again,) = [r for r in runs if r.info.run_id == victim.info.run_id]  # the same run, re-attached
    print(f"driver kill: {len(runs)} trial runs, interrupted trial resumed at steps {resumed_steps(client, again)}")
    assert max(resumed_steps(client, again)) > 0  # continued from its Train checkpoint


def test_ctrl_c_stops_the_search_and_resume_finishes_it(nodes, space, workdir, tmp_path):
    """Tune catches the first SIGINT, saves its state and returns from fit() as if done; the
    search must not go on to score and close the trials but end KILLED, ready for --resume."""
    args = ("--trials", "2", "--max-concurrent", "1", "--address", nodes.address)
    log = tmp_path / "driver.log"
    driver = _start_driver(search_cmd(space, workdir, "ctrlc", "ctrlc", *args), log)
    try:
        def first_checkpoint():
            _assert_running(driver, log, "Ctrl-C")
            return _running_trial_with_checkpoint(workdir, "ctrlc")

        victim = _wait(first_checkpoint, 600, "a trial's first checkpoint", every=0.5)
        os.killpg(driver.pid, signal.SIGINT)  # what Ctrl-C in the driver's terminal sends
        driver.wait(timeout=300)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
    output = log.read_text()
    assert driver.returncode == 130, output[-3000:]
    assert "interrupted (a search continues with --resume" in output
    client, runs = runs_of(workdir, "ctrlc")
    (again,) = [r for r in runs if r.info.run_id == victim.info.run_id]
    assert again.info.status == "RUNNING" and "raydistill.status" not in again.data.tags  # not closed as lost
    _, (search,) = runs_of(workdir, "ctrlc", kind="search")
    assert search.info.status == "KILLED"
    out = subprocess.run(search_cmd(space, workdir, "ctrlc", "ctrlc", "--resume", *args), env=ENV,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    client, runs = assert_once_per_trial(workdir, "ctrlc", 2)
    (again,) = [r for r in runs if r.info.run_id == victim.info.run_id]
    print(f"Ctrl-C: interrupted trial resumed at steps {resumed_steps(client, again)}")
    assert max(resumed_steps(client, again)) > 0


def test_a_node_dies_and_the_interrupted_trial_restarts_from_its_checkpoint(nodes, space, workdir):
    args = ("--trials", "2", "--max-concurrent", "1", "--address", nodes.address)
    driver = subprocess.Popen(search_cmd(space, workdir, "nodekill", "nodekill", *args), env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def first_checkpoint():
            assert driver.poll() is None, "the search ended before a node could be killed: " + driver.stdout.read()[-2000:]
            return _running_trial_with_checkpoint(workdir, "nodekill")

        victim = _wait(first_checkpoint, 600, "a trial's first checkpoint", every=0.5)
        listed = subprocess.run([RAY, "list", "actors", "--address", nodes.dashboard, "--format", "json",
                                 "-f", "class_name=RayTrainWorker", "-f", "state=ALIVE", "--detail"],
                                env=ENV, capture_output=True, text=True)
        (worker,) = json.loads(listed.stdout)
        node = nodes.node_of(worker["pid"])
        assert node is not nodes.head  # the head has no CPUs
        nodes.kill(node)
        killed_at = time.monotonic()
        output, _ = driver.communicate(timeout=900)
    finally:
        if driver.poll() is None:
            driver.kill()
    print(f"after the node kill: {time.monotonic() - killed_at:.0f} s to the end of the search")
    assert driver.returncode == 0, output[-4000:]
    client, runs = assert_once_per_trial(workdir, "nodekill", 2)
    (again,) = [r for r in runs if r.info.run_id == victim.info.run_id]
    print(f"node kill: {len(runs)} trial runs, interrupted trial resumed at steps {resumed_steps(client, again)}")
    assert max(resumed_steps(client, again)) > 0  # restarted from its last checkpoint, not from step 0


PASS_DRIVER = """
import sys
from pathlib import Path
import ray
from raydistill.corpus.manifest import Corpus
from raydistill.targets.store import TargetStore
from raydistill.teacher.sources import load_teacher
ray.init(address=sys.argv[1])
corpus = Corpus.load(sys.argv[2])
TargetStore(Path(sys.argv[4])).ensure(load_teacher(sys.argv[3]), corpus, corpus.split("train"), [(9, 20)],
                                      layers=[4], distributed=True, shard_seconds=4.0, batch_seconds=8.0)
print("pass complete")
"""


def test_the_distributed_teacher_pass_survives_a_killed_node_and_driver(nodes, librispeech_corpus, base_teachers,
                                                                         tmp_path):
    """HuBERT-base (random weights) over a LibriSpeech-layout corpus as Ray tasks on the worker
    nodes: one node is killed while it runs a shard (Ray reruns that shard elsewhere), then the
    driver is killed; a second driver keeps the finished shards and completes the pass. The
    result equals the same pass run in one process."""
    from raydistill.targets.store import TargetStore
    from raydistill.targets.teacher_pass import done_shards
    from raydistill.teacher.sources import load_teacher

    while len([w for w in nodes.workers if w.poll() is None]) < 2:
        nodes.add_worker()
    spec = f"torchaudio:{base_teachers['pretrain']}"
    train = librispeech_corpus.split("train")
    reference = TargetStore(tmp_path / "reference").ensure(load_teacher(spec), librispeech_corpus, train, [(9, 20)],
                                                           layers=[4], shard_seconds=4.0, batch_seconds=8.0)
    root = tmp_path / "store"
    command = [sys.executable, "-c", PASS_DRIVER, nodes.address, str(librispeech_corpus.root), spec, str(root)]
    log = tmp_path / "driver.log"
    driver = _start_driver(command, log)
    try:
        def shard_running_after_one_done():
            _assert_running(driver, log, "a node could be killed")
            passes = list(root.glob(".pass-*"))
            if not passes or not done_shards(passes[0]):
                return None
            listed = subprocess.run([RAY, "list", "tasks", "--address", nodes.dashboard, "--format", "json",
                                     "--detail", "-f", "state=RUNNING", "-f", "func_or_class_name=_ray_shard"],
                                    env=ENV, capture_output=True, text=True)
            running = [t for t in json.loads(listed.stdout or "[]") if t.get("worker_pid")]
            return (passes[0], running[0]["worker_pid"]) if running else None

        pass_dir, pid = _wait(shard_running_after_one_done, 600, "a shard running after the first finished", every=0.3)
        victim = nodes.node_of(pid)
        assert victim is not nodes.head
        nodes.kill(victim)
        done_at_kill = len(done_shards(pass_dir))
        _wait(lambda: len(done_shards(pass_dir)) > done_at_kill + 1 or driver.poll() is not None, 600,
              "two more shards after the node died")
        _assert_running(driver, log, "its driver could be killed")
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
        kept = len(done_shards(pass_dir))
        assert not (root / "layer4" / "features.npy").exists()  # nothing in the store until every shard is done
        driver = _start_driver(command, log)
        assert driver.wait(timeout=900) == 0, log.read_text()[-3000:]
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    import re

    output = log.read_text()
    resumed = re.search(r"(\d+)/(\d+) shards already done \(resuming\)", output)
    assert resumed and kept <= int(resumed[1]) < int(resumed[2]), output[-2000:]
    print(f"distributed teacher pass: node killed after {done_at_kill} shards, driver killed after {kept}; resumed")
    store = TargetStore(root)
    import numpy as np

    np.testing.assert_allclose(np.asarray(store.features(4), np.float32), np.asarray(reference.features(4), np.float32),
                               atol=5e-3, rtol=5e-3)
    assert store.has_kmeans(9, 20) and not store.has_layer(9)
    agree = (np.asarray(store.labels(9, 20)) == np.asarray(reference.labels(9, 20))).mean()
    assert agree > 0.95, agree


def _unshare_works() -> bool:
    return subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _unshare_works(), reason="needs `unshare -m` (root, or user namespaces)")
def test_doctor_names_the_node_that_cannot_see_the_workdir(nodes, space, tmp_path):
    """`doctor` passes on the cluster; then a node joins whose raylet runs in a mount namespace of
    its own, with a tmpfs over the workdir's parent: it truly sees another directory there.
    `doctor` fails naming that node (its resources say which), and so does a search, before any
    work (no MLflow store written)."""
    workdir = tmp_path / "shared" / "runs"
    doctor = [sys.executable, "-m", "raydistill", "doctor", "--address", nodes.address, "--workdir", str(workdir)]
    alive = 1 + sum(worker.poll() is None for worker in nodes.workers)  # the tests before killed some
    started = time.monotonic()
    out = subprocess.run([*doctor, "--json"], env=ENV, capture_output=True, text=True, timeout=600)
    print(f"doctor on {alive} nodes: {time.monotonic() - started:.0f} s")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    checks = {c["name"]: c for c in json.loads(out.stdout)["checks"]}
    assert {c["status"] for c in checks.values()} == {"ok"}, checks
    assert f"read and written by all {alive} node(s)" in checks["workdir"]["what"]
    assert checks["ray-auth"]["what"] == "token authentication on"

    hidden = workdir.parent
    blind = nodes.add_worker("--resources", json.dumps({"blind": 1}),
                             wrap=["unshare", "-m", "sh", "-c", f'mount -t tmpfs tmpfs {hidden} && exec "$0" "$@"'])
    try:
        out = subprocess.run(doctor, env=ENV, capture_output=True, text=True, timeout=600)
        assert out.returncode == 2, out.stdout[-3000:] + out.stderr[-3000:]
        (line,) = [x for x in out.stdout.splitlines() if x.startswith("FAIL workdir:")]
        import re

        named = re.findall(r"node [0-9a-f]{12} \(([^)]*)\): (\w+ \w+)", line)
        assert [(where.split("; ")[1], why) for where, why in named] == [("CPU 1, blind 1", "cannot read")], line
        assert "raydistill: error: 1 check(s) failed: workdir" in out.stderr
        searched = subprocess.run(search_cmd(space, workdir, "doctor", "blind", "--address", nodes.address), env=ENV,
                                  capture_output=True, text=True, timeout=600)
        assert searched.returncode == 2, searched.stderr[-3000:]
        assert "raydistill: error: pre-flight check failed: FAIL workdir:" in searched.stderr and "blind 1" in searched.stderr
        assert not (workdir / "mlflow.db").exists()
    finally:
        nodes.kill(blind)
        nodes.workers.remove(blind)

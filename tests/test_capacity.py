"""Trials are planned for the cluster the autoscaler may build, not the nodes up when the search
starts: an autoscaling cluster's GPU workers (min 0) are not up yet, or idled out while the
references were scored on the CPU head."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from raydistill.search.cluster import capacity, node_type_limits
from raydistill.search.setup import make_setup

REPO = Path(__file__).resolve().parents[1]


def bootstrap_of_cluster_yaml(tmp_path) -> Path:
    """cluster.yaml as `ray up` leaves it on the head: node types filled in with their instance
    types' resources (m6i.2xlarge: 8 vCPUs, the head's own {CPU: 4} kept; g5.2xlarge: 8 vCPUs, 1 GPU)."""
    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    config["available_node_types"]["gpu_worker"]["resources"] = {"CPU": 8, "GPU": 1}
    path = tmp_path / "ray_bootstrap_config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class HeadOnly:
    """What Ray reports of a cluster whose GPU workers are all down: the CPU head."""

    @staticmethod
    def cluster_resources():
        return {"CPU": 4.0, "memory": 3e10}


def test_the_autoscalers_limits_count_every_worker_it_may_start(tmp_path):
    config = yaml.safe_load(bootstrap_of_cluster_yaml(tmp_path).read_text())
    assert node_type_limits(config) == {"CPU": 4 + 8 * 8, "GPU": 8}
    config["max_workers"] = 3  # the cluster's cap on workers binds before the node type's
    assert node_type_limits(config) == {"CPU": 4 + 3 * 8, "GPU": 3}


def test_trials_are_planned_for_the_gpus_the_autoscaler_may_start(tmp_path):
    path = bootstrap_of_cluster_yaml(tmp_path)
    resources = capacity(HeadOnly, bootstrap=path)
    assert resources["GPU"] == 8 and resources["CPU"] == 68 and resources["memory"] == 3e10
    assert capacity(HeadOnly, bootstrap=tmp_path / "none.yaml") == HeadOnly.cluster_resources()  # no autoscaler


def test_a_space_without_gpus_gets_one_per_worker_on_an_autoscaling_gpu_cluster(tmp_path, monkeypatch):
    import raydistill.search.cluster as cluster

    monkeypatch.setattr(cluster, "BOOTSTRAP_CONFIG", bootstrap_of_cluster_yaml(tmp_path))
    opts = SimpleNamespace(gpus_per_worker=None, workers=1, cpus_per_worker=4.0, seed=0, max_failures=1)
    store, corpus = SimpleNamespace(root=tmp_path), SimpleNamespace(root=tmp_path)
    teacher = SimpleNamespace(describe=lambda: {"num_layers": 12})
    workdir = SimpleNamespace(ray_results=tmp_path)
    setup = make_setup(opts, "s", corpus, store, teacher, {"probe": "probe", "full": "full"}, workdir, HeadOnly)
    assert setup.gpus_per_worker == 1.0  # not 0: no GPU node is up yet
    assert setup.trials_at_once(capacity(HeadOnly)) == 8  # one per GPU worker, not one at a time


def test_a_gpu_share_leaves_room_for_each_processs_cuda_context():
    """Two trials at --gpus-per-worker 0.5 on an 80 GB card: the allocator caps plus the two
    contexts (outside the allocator) stay within the card."""
    from raydistill.search.trial import CUDA_CONTEXT_BYTES, memory_fraction

    total = 80 * 1024**3
    caps = [memory_fraction(0.5, total)] * 2
    assert sum(c * total + CUDA_CONTEXT_BYTES for c in caps) <= total
    assert memory_fraction(0.5, total) == pytest.approx(0.5 - 1 / 80)
    assert memory_fraction(0.01, 16 * 1024**3) == 0.05  # a share smaller than a context: the floor

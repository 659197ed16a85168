"""cluster.yaml and cluster/local.yaml are valid Ray cluster-launcher configs (Ray's own schema
and checks, after Ray fills in its provider defaults), install raydistill, and hold no secrets."""

import copy
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIGS = [REPO / "cluster.yaml", REPO / "cluster" / "local.yaml"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_ray_accepts_the_cluster_config(path):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load(path.read_text())
    validate_config(prepare_config(copy.deepcopy(config)))  # raises on any schema or consistency error
    setup = " ".join(config["setup_commands"])
    assert "scripts/setup.sh" in setup and config["file_mounts"]["~/raydistill"] == "."
    starts = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in starts


def test_the_validator_catches_a_broken_config():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load(CONFIGS[0].read_text())
    config["available_node_types"]["gpu_worker"]["min_workers"] = 20  # more than max_workers
    with pytest.raises(Exception):
        validate_config(prepare_config(copy.deepcopy(config)))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_no_credentials_in_the_cluster_config(path):
    text = path.read_text()
    assert not re.search(r"AKIA[0-9A-Z]{16}", text)  # AWS access key ids
    assert not re.search(r"(?i)(secret|password|token)\s*[:=]", text)
    assert "PRIVATE KEY" not in text

"""cluster.yaml and cluster/local.yaml are valid Ray cluster-launcher configs (Ray's own schema
and checks, after Ray fills in its provider defaults), install raydistill, and hold no secrets."""

import copy
import re
from pathlib import Path

import jsonschema
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

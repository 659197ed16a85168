"""TrialSetup: what every trial of a search, study or train run receives (fast, no Ray)."""

import dataclasses
import os
import pickle
from pathlib import Path
from types import SimpleNamespace

import pytest

from raydistill.config import PRETRAIN
from raydistill.search.setup import TrialSetup, make_setup

FIELDS = dict(search_id="dice-1", corpus_dir="/w/corpora/c", targets_dir="/w/cache/t",
              teacher={"spec": "embedded", "key": "k", "source": "embedded", "num_layers": 4},
              budgets={"probe": "probe", "full": "full"}, eval_seed=3, workers=2, cpus_per_worker=1.5,
              gpus_per_worker=0.5, storage_path="/w/ray_results", max_failures=1)


def test_setup_round_trips_through_pickle():
    # tune.with_parameters and Ray Train's train_loop_config both pickle it to the workers
    setup = TrialSetup(**FIELDS, base={"method": "dicehubert", "optim": {"lr": 1e-3}},
                       method_bases={"kd": {"kd": {"beta": 4.0}}}, references={"fbank": {"pr_per": 80.0}},
                       pretrain_targets_dir="/w/cache/mfcc")
    back = pickle.loads(pickle.dumps({"setup": setup, "config": {}}))["setup"]
    assert type(back) is TrialSetup and back == setup
    assert back.budgets["full"] == "full" and back.method_bases["kd"] == {"kd": {"beta": 4.0}}


def test_setup_optional_fields_default_to_nothing():
    setup = TrialSetup(**FIELDS)
    assert (setup.base, setup.method_bases, setup.references, setup.pretrain_targets_dir) == ({}, {}, None, None)


def test_setup_rejects_unknown_and_missing_fields_by_name():
    with pytest.raises(TypeError, match="cells"):
        TrialSetup(**FIELDS, cells={})
    missing = {k: v for k, v in FIELDS.items() if k != "corpus_dir"}
    with pytest.raises(TypeError, match="corpus_dir"):
        TrialSetup(**missing)
    with pytest.raises(TypeError):  # keyword-only: no field can be passed by position by mistake
        TrialSetup(*FIELDS.values())


def test_setup_is_frozen_and_checks_its_budgets():
    setup = TrialSetup(**FIELDS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setup.eval_seed = 4
    with pytest.raises(ValueError, match="probe, full"):
        TrialSetup(**{**FIELDS, "budgets": {"probe": "probe"}})


def test_targets_for_a_method():
    setup = TrialSetup(**FIELDS)
    assert setup.targets_for("dicehubert") == "/w/cache/t"
    with pytest.raises(ValueError, match="only a study"):
        setup.targets_for(PRETRAIN)
    assert dataclasses.replace(setup, pretrain_targets_dir="/w/mfcc").targets_for(PRETRAIN) == "/w/mfcc"


def test_worker_resources_and_trials_at_once():
    cpu_only = TrialSetup(**{**FIELDS, "gpus_per_worker": 0.0})
    assert cpu_only.worker_resources == {"CPU": 1.5}
    assert cpu_only.trials_at_once({"CPU": 7.0}) == 2  # 2 workers x 1.5 CPUs per trial
    assert cpu_only.trials_at_once({"CPU": 2.0}) == 1  # less than one trial's worth: still one
    shared = TrialSetup(**FIELDS)  # 2 workers x half a GPU: one GPU per trial
    assert shared.worker_resources == {"CPU": 1.5, "GPU": 0.5}
    assert shared.trials_at_once({"CPU": 32.0, "GPU": 3.0}) == 3
    assert shared.trials_at_once({"CPU": 32.0}) == 1


def test_make_setup_from_options():
    ray = SimpleNamespace(cluster_resources=lambda: {"CPU": 4.0, "GPU": 1.0})
    opts = SimpleNamespace(workers=1, cpus_per_worker=1.0, gpus_per_worker=None, seed=7)  # train: no max_failures
    teacher = SimpleNamespace(describe=lambda: {"spec": "embedded", "num_layers": 4})
    setup = make_setup(opts, "train-abc", SimpleNamespace(root="/c"), SimpleNamespace(root="/t"), teacher,
                       {"probe": "smoke", "full": "smoke"}, SimpleNamespace(ray_results="/r"), ray,
                       references={"teacher": {}})
    assert setup == TrialSetup(search_id="train-abc", corpus_dir="/c", targets_dir="/t",
                               teacher={"spec": "embedded", "num_layers": 4}, budgets={"probe": "smoke", "full": "smoke"},
                               eval_seed=7, workers=1, cpus_per_worker=1.0, gpus_per_worker=1.0,  # the cluster has a GPU
                               storage_path="/r", max_failures=1, references={"teacher": {}})
    with pytest.raises(TypeError, match="cells"):
        make_setup(opts, "x", SimpleNamespace(root="/c"), SimpleNamespace(root="/t"), teacher,
                   {"probe": "smoke", "full": "smoke"}, SimpleNamespace(ray_results="/r"), ray, cells={})


def test_a_new_worker_removes_the_checkpoint_staging_of_killed_workers(tmp_path, monkeypatch):
    # Ray kills the workers of an ASHA-stopped trial inside their `with staging_dir()`: what
    # they staged stays on the node unless the next worker there removes it.
    import subprocess
    import sys
    import tempfile

    from raydistill.search.trial import STAGING_PREFIX, staging_dir

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = tmp_path / f"{STAGING_PREFIX}{int(gone.stdout)}-abc"
    live = tmp_path / f"{STAGING_PREFIX}{os.getppid()}-def"  # this test's parent: running
    other = tmp_path / f"{STAGING_PREFIX}notapid-x"  # matches the pattern; no pid in it
    for d in (dead, live, other):
        d.mkdir()
        (d / "student.pt").write_bytes(b"x")
    with staging_dir() as mine:
        assert Path(mine).name.startswith(f"{STAGING_PREFIX}{os.getpid()}-") and Path(mine).parent == tmp_path
        assert not dead.exists() and live.exists() and other.exists()
    assert not Path(mine).exists()

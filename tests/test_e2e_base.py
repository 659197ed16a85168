"""The base-scale search spaces end to end at smoke scale, on CPU: a LibriSpeech-layout tree
(flac + trans.txt, train/dev/test subsets, espeak-ng speech) and HuBERT-base-shaped teachers
with random weights, as torchaudio state dicts and a Hugging Face directory.

base/all.yaml composes the five per-method files, each trial running its file's base and
smoke section, and its first five trials are one per method: so every base-scale space runs
here through search -> MLflow runs -> export -> `train --config` rerun. Two more searches:
the encoder-only torchaudio `hubert_base` (no head, no mask embedding) with DiceHuBERT run
live (the teacher in every trial, only units cached), and the HF teacher with DistilHuBERT."""

import json
from pathlib import Path

import pytest

from needs import missing
from raydistill.cli import main
from raydistill.methods import load_student
from raydistill.search.space import load_space

REPO = Path(__file__).resolve().parents[1]
BASE = REPO / "search_spaces" / "base"
FILES = {"dicehubert": "dice.yaml", "kd": "kd.yaml", "star": "star.yaml", "armhubert": "arm.yaml",
         "distilhubert": "distil.yaml"}
METHODS = list(FILES)
LIBRISPEECH_METRICS = {"pr_per", "sid_acc", "asr_wer"}  # what the tree has labels for
pytestmark = pytest.mark.slow


def trial_runs(workdir, experiment):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return [r for r in runs if r.data.tags.get("raydistill.kind") == "trial"], runs


@pytest.fixture(scope="module")
def searched(ray_cluster, librispeech_corpus, base_teachers, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("base") / "runs"
    code = main(["search", "--space", str(BASE / "all.yaml"), "--smoke", "--trials", "5", "--corpus",
                 str(librispeech_corpus.root), "--teacher", f"torchaudio:{base_teachers['pretrain']}",
                 "--workdir", str(workdir), "--experiment", "base", "--name", "base-all", "--confirm", "0"])
    assert code == 0
    return workdir


def test_every_base_space_runs_one_trial_per_method(searched):
    trials, runs = trial_runs(searched, "base")
    assert sorted(t.data.params["method"] for t in trials) == sorted(METHODS)
    (parent,) = [r for r in runs if r.data.tags.get("raydistill.kind") == "search"]
    assert parent.data.params["teacher_features"] == "cached"  # a few MB: it fits
    for trial in trials:
        metrics = trial.data.metrics
        assert LIBRISPEECH_METRICS <= set(metrics), sorted(metrics)
        assert not {"ks_acc", "ic_acc", "qbe_map"} & set(metrics)  # the space's tasks: none without labels
        # the trial ran its own file's base with its smoke section
        config = json.loads(trial.data.tags["raydistill.config"])
        space = load_space(BASE / FILES[config["method"]], smoke=True)
        assert config["optim"]["max_steps"] == space.base_config().optim.max_steps


def test_export_and_rerun_at_base_scale(searched, base_teachers, tmp_path, capsys):
    out = tmp_path / "exported"
    assert main(["export", "--workdir", str(searched), "--experiment", "base", "--out", str(out)]) == 0
    config, module, teacher = load_student(out / "student.pt")
    assert teacher["num_layers"] == 12 and teacher["embed_dim"] == 768
    assert str(base_teachers["pretrain"]) in teacher["spec"]
    capsys.readouterr()
    assert main(["train", "--config", str(out / "best.yaml"), "--workdir", str(searched), "--experiment", "base"]) == 0
    summary = json.loads(capsys.readouterr().out)
    # a number, not NaN: the mean of the tasks' scores out of 100 (an error rate x as 100 - x)
    assert LIBRISPEECH_METRICS <= set(summary), sorted(summary)
    tasks = [(k, k.endswith(("_per", "_wer", "_eer"))) for k in
             ("pr_per", "asr_wer", "asv_eer", "ks_acc", "qbe_map", "sid_acc", "ic_acc") if k in summary]
    scores = [100.0 - summary[k] if error else summary[k] for k, error in tasks]
    assert summary["overall_score"] == pytest.approx(sum(scores) / len(scores))


def test_encoder_only_torchaudio_teacher_run_live(ray_cluster, librispeech_corpus, base_teachers, tmp_path):
    """DiceHuBERT under a cache budget its features do not fit (13 hidden states, ~57 MB here):
    the search switches to the live teacher by itself. Only the units are cached, fitted on the
    pass's sample and assigned in a second pass (soft labels and L_feat come from the live teacher)."""
    workdir = tmp_path / "runs"
    code = main(["search", "--space", str(BASE / "dice.yaml"), "--smoke", "--trials", "1", "--corpus",
                 str(librispeech_corpus.root), "--teacher", f"torchaudio:{base_teachers['base']}",
                 "--cache-budget", "30M", "--workdir", str(workdir), "--experiment", "enc", "--confirm", "0"])
    assert code == 0
    trials, runs = trial_runs(workdir, "enc")
    assert len(trials) == 1 and LIBRISPEECH_METRICS <= set(trials[0].data.metrics)
    (parent,) = [r for r in runs if r.data.tags.get("raydistill.kind") == "search"]
    assert parent.data.params["teacher_features"] == "live"
    (store,) = (workdir / "cache" / "targets").iterdir()
    assert len(list(store.glob("layer*/k*/labels.npy"))) == 6  # layers 6, 9, 12 x K 100, 500
    assert not list(store.glob("layer*/features.npy")) and len(list((store / "samples").glob("*.npy"))) == 3


def test_hf_teacher(ray_cluster, librispeech_corpus, base_teachers, tmp_path):
    if "hf" not in base_teachers:
        missing("transformers is not installed")
    workdir = tmp_path / "runs"
    code = main(["search", "--space", str(BASE / "distil.yaml"), "--smoke", "--trials", "1", "--corpus",
                 str(librispeech_corpus.root), "--teacher", f"hf:{base_teachers['hf']}",
                 "--workdir", str(workdir), "--experiment", "hf", "--confirm", "0"])
    assert code == 0
    (trial,), runs = trial_runs(workdir, "hf")
    assert LIBRISPEECH_METRICS <= set(trial.data.metrics)
    (parent,) = [r for r in runs if r.data.tags.get("raydistill.kind") == "search"]
    assert parent.data.params["teacher_features"] == "cached"
    (store,) = (workdir / "cache" / "targets").iterdir()
    # DistilHuBERT's targets, read from the cache: its heads' layers 4, 8 and 12 only (search/space.py: teacher_needs)
    assert sorted(p.parent.name for p in store.glob("layer*/features.npy")) == ["layer12", "layer4", "layer8"]

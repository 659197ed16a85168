"""Search-space files: validation before anything starts, conditional sampling, target combos."""

from pathlib import Path

import optuna
import pytest
import yaml

from raydistill.errors import UserError
from raydistill.search.space import load_space

REPO = Path(__file__).resolve().parents[1]
GOOD = {
    "method": "dicehubert",
    "base": {"student": {"preset": "tiny-teacher", "embed_dim": 64, "ffn_dim": 128}, "optim": {"max_steps": 10}},
    "params": {
        "optim.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "targets.labels": {"type": "categorical", "choices": ["hard", "soft"]},
        "targets.temperature": {"type": "float", "low": 0.5, "high": 10, "when": {"targets.labels": "soft"}},
        "targets.teacher_layer": {"type": "int", "low": 2, "high": 4},
        "targets.num_clusters": {"type": "categorical", "choices": [20, 50]},
    },
}


def write(tmp_path, doc) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
    return path


def with_param(name, spec):
    doc = yaml.safe_load(yaml.safe_dump(GOOD, sort_keys=False))
    doc["params"][name] = spec
    return doc


def test_shipped_spaces_are_valid():
    paths = sorted((REPO / "search_spaces").glob("*.yaml"))
    assert {p.stem for p in paths} >= {"dice", "kd", "star", "arm", "distil", "all"}
    for path in paths:
        for smoke in (False, True):
            space = load_space(path, smoke=smoke)
            assert space.params
            needs = space.teacher_needs(4)
            assert needs.units or needs.features or needs.logits


def test_all_yaml_samples_every_method_with_its_own_knobs():
    space = load_space(REPO / "search_spaces" / "all.yaml")
    assert space.methods() == ["dicehubert", "kd", "star", "armhubert", "distilhubert"]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = {}
    for _ in range(60):
        values = space.sample(study.ask())
        config = space.config(values)
        seen.setdefault(config.method, []).append(values)
        knobs = {k.split(".")[0] for k in values} - {"method", "optim", "student", "mask", "targets"}
        # every method-specific knob sampled belongs to the sampled method
        assert knobs <= {"dicehubert": {"nomask_weight", "feat_weight"}, "kd": {"kd"}, "star": {"star"},
                         "armhubert": {"arm"}, "distilhubert": {"distil"}}[config.method], values
        if config.method == "kd":
            assert config.student.arch == "lstm"
    assert set(seen) == set(space.methods())
    needs = space.teacher_needs(4)
    assert needs.logits and needs.features == (0, 1, 2, 3, 4) and (4, 100) in needs.units


def test_conditional_parameter_only_when_its_condition_holds(tmp_path):
    space = load_space(write(tmp_path, GOOD))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(40):
        trial = study.ask()
        values = space.sample(trial)
        seen.add(values["targets.labels"])
        assert ("targets.temperature" in values) == (values["targets.labels"] == "soft")
        config = space.config(values)
        assert config.targets.labels == values["targets.labels"]
        study.tell(trial, 0.0)
    assert seen == {"hard", "soft"}


def test_target_combos_cover_every_layer_and_k(tmp_path):
    assert load_space(write(tmp_path, GOOD)).target_combos() == [(2, 20), (2, 50), (3, 20), (3, 50), (4, 20), (4, 50)]


def test_smoke_section_overrides_base(tmp_path):
    doc = {**GOOD, "smoke": {"optim": {"max_steps": 3}}}
    assert load_space(write(tmp_path, doc), smoke=True).base_config().optim.max_steps == 3
    assert load_space(write(tmp_path, doc), smoke=False).base_config().optim.max_steps == 10


BAD = [
    ("not yaml", "::: [", "not valid YAML"),
    ("top-level list", "- a\n- b\n", "mapping at the top level"),
    ("unknown top key", {**GOOD, "trials": 3}, "unknown key(s) trials"),
    ("unknown method", {**GOOD, "method": "magic"}, "unknown method 'magic'"),
    ("unknown preset", {**GOOD, "base": {"student": "huge"}}, "unknown preset 'huge'"),
    ("unknown base key", {**GOOD, "base": {"optim": {"learning_rate": 1}}}, "unknown key(s) learning_rate"),
    ("unknown param path", with_param("optim.learning_rate", {"type": "float", "low": 0, "high": 1}),
     "params.optim.learning_rate: not a configuration field"),
    ("unknown param type", with_param("optim.lr", {"type": "gaussian"}), "unknown type 'gaussian'"),
    ("inverted range", with_param("optim.lr", {"type": "float", "low": 1e-2, "high": 1e-4}), "inverted range"),
    ("empty range", with_param("mask.prob", {"type": "float", "low": 0.5, "high": 0.5}), "empty or inverted range"),
    ("log with zero low", with_param("optim.lr", {"type": "float", "low": 0, "high": 1, "log": True}), "log range"),
    ("empty choices", with_param("student.embed_dim", {"type": "categorical", "choices": []}), "non-empty list"),
    ("condition on unknown param", with_param("mask.prob", {"type": "float", "low": 0.5, "high": 0.7,
                                                            "when": {"mask.length": 10}}), "unknown parameter"),
    ("condition value not a choice", with_param("mask.prob", {"type": "float", "low": 0.5, "high": 0.7,
                                                              "when": {"targets.labels": "fuzzy"}}), "not a choice"),
    ("masking ratio above 1", with_param("mask.prob", {"type": "float", "low": 0.5, "high": 1.2}),
     "prob must be in (0, 1)"),
    ("masking ratio zero", with_param("mask.prob", {"type": "categorical", "choices": [0.0, 0.5]}),
     "prob must be in (0, 1)"),
    ("heads do not divide width", with_param("student.embed_dim", {"type": "categorical", "choices": [64, 66]}),
     "divisible by num_heads"),
    ("continuous teacher layer", with_param("targets.num_clusters", {"type": "float", "low": 10, "high": 20}),
     "must be categorical or a non-log int range"),
    ("extra key in param", with_param("optim.lr", {"type": "float", "low": 1e-4, "high": 1e-3, "prior": "x"}),
     "unknown key(s) prior"),
    ("int with fractional bounds", with_param("student.num_layers", {"type": "int", "low": 1.5, "high": 3}),
     "integer bounds"),
]


@pytest.mark.parametrize("name, doc, message", BAD, ids=[b[0] for b in BAD])
def test_bad_spaces_are_refused_with_one_clear_line(tmp_path, name, doc, message):
    with pytest.raises(UserError) as err:
        load_space(write(tmp_path, doc))
    text = str(err.value)
    assert message in text, text
    assert str(tmp_path / "space.yaml") in text and "\n" not in text


def test_missing_space_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_space(tmp_path / "nope.yaml")

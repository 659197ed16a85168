"""Search-space files: validation before anything starts, conditional sampling, target combos."""

import copy
from pathlib import Path

import optuna
import pytest
import yaml

from raydistill.errors import UserError
from raydistill.teacher.info import TeacherInfo
from raydistill.search.space import load_space

REPO = Path(__file__).resolve().parents[1]
TINY_TEACHER = TeacherInfo(4, 192, 100)  # the embedded teacher's shape
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
            needs = space.teacher_needs(TINY_TEACHER)
            # masking distillation runs the teacher live on masked input: nothing to cache for arm.yaml
            assert bool(needs.units or needs.features or needs.logits) == (path.stem != "arm"), path


METHOD_FILES = ["dice.yaml", "kd.yaml", "star.yaml", "arm.yaml", "distil.yaml"]


def spec(p):
    """What a parameter searches, apart from its names."""
    return (p.type, p.low, p.high, p.log, p.step, p.choices)


def conditions(space, p):
    """A parameter's own conditions by config path, without the one on the method."""
    paths = {q.name: q.path for q in space.params}
    return {paths[k]: v for k, v in (p.when or {}).items() if k != "method"}


@pytest.mark.parametrize("smoke", [False, True])
def test_all_yaml_is_every_per_method_file_conditional_on_its_method(smoke):
    """Expectations come from the per-method files as they stand: a knob or range added there
    is in all.yaml without an edit."""
    space = load_space(REPO / "search_spaces" / "all.yaml", smoke=smoke)
    parts = [load_space(REPO / "search_spaces" / f, smoke=smoke) for f in METHOD_FILES]
    assert space.methods() == [part.method for part in parts]
    for part in parts:
        method = part.method
        assert space.base_for(method) == part.base_for(method), method
        for p in part.params:
            found = [q for q in space.params if q.path == p.path and method in (q.when or {}).get("method", ())]
            assert len(found) == 1, f"{method}: {p.path} is not searched, conditional on the method"
            q = found[0]
            assert spec(q) == spec(p), f"{method}: {p.path} searched as {spec(q)}, its file says {spec(p)}"
            assert conditions(space, q) == (p.when or {}), f"{method}: {p.path} conditions"
    assert len(space.params) == 1 + sum(len(part.params) for part in parts)  # nothing else


def pop_path(d: dict, path: str):
    """Remove and return the value at a dotted config path of a nested dict."""
    *parents, leaf = path.split(".")
    for key in parents:
        d = d[key]
    return d.pop(leaf)


def test_all_yaml_samples_every_method_within_its_own_ranges():
    space = load_space(REPO / "search_spaces" / "all.yaml")
    own, own_base, own_space = {}, {}, {}
    for f in METHOD_FILES:
        part = load_space(REPO / "search_spaces" / f)
        own[part.method] = {p.path: p for p in part.params}
        own_base[part.method] = part.base_config().to_dict()
        own_space[part.method] = part
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(80):
        trial = study.ask()
        values = space.sample(trial)
        config = space.config(values)
        method = values["method"]
        seen.add(method)
        assert config.method == method
        assert set(values) - {"method"} <= set(own[method]), values
        for path, value in values.items():
            if path == "method":
                continue
            p = own[method][path]
            assert value in p.choices if p.type == "categorical" else p.low <= value <= p.high, (method, path, value)
        # the trial's config is its method's own file's base with exactly the sampled values set:
        # a number as sampled, a choice as the method's own file sets it ("2by2" -> [True, ...])
        got, want = config.to_dict(), copy.deepcopy(own_base[method])
        for path, value in values.items():
            if path != "method":
                expected = value if own[method][path].type != "categorical" else pop_path(
                    own_space[method].config({"method": method, path: value}).to_dict(), path)
                assert pop_path(got, path) == expected, (method, path)
                pop_path(want, path)
        assert got == want, method
        study.tell(trial, 0.0)
    assert seen == set(own)
    # dicehubert's learning rate keeps its own range (1e-3..8e-3 when written), apart from kd's
    lrs = {m: own[m]["optim.lr"] for m in ("dicehubert", "kd")}
    names = {name: dist for t in study.trials for name, dist in t.distributions.items() if name.endswith("optim.lr")}
    assert {(d.low, d.high) for d in names.values()} == {(p.low, p.high) for p in lrs.values()}


def test_composed_suggestions_reach_trials_as_config_paths(tmp_path):
    """Ray's Optuna searcher hands a trial the Optuna names it suggested; ours maps them back
    to config paths, which the trial's config and its MLflow params use."""
    from raydistill.search.searcher import ProbeAwareOptunaSearch
    from raydistill.search.setup import TrialSetup
    from raydistill.search.trial import trial_config

    space = load_space(REPO / "search_spaces" / "all.yaml")
    searcher = ProbeAwareOptunaSearch(space=space.sample_for_ray, metric="overall_score", mode="max",
                                      intermediate_metric="probe_score", to_config=space.trial_values,
                                      points_to_evaluate=space.initial_points(10),
                                      sampler=optuna.samplers.RandomSampler(seed=0))
    setup = TrialSetup(search_id="s", corpus_dir="c", targets_dir="t", teacher={}, budgets={"probe": "smoke", "full": "smoke"},
                       eval_seed=0, workers=1, cpus_per_worker=1.0, gpus_per_worker=0.0, storage_path="r", max_failures=1,
                       base=space.base, method_bases=space.method_bases)
    methods = []
    for i in range(10):
        values = searcher.suggest(f"t{i}")
        assert all(":" not in k for k in values), values
        config = trial_config(setup, values)
        assert config.to_dict() == space.config(values).to_dict()
        methods.append(config.method)
    assert methods[:5] == space.methods()  # every method once first


def test_all_yaml_teacher_needs_cover_every_method():
    space = load_space(REPO / "search_spaces" / "all.yaml")
    needs = space.teacher_needs(TINY_TEACHER)
    for f in METHOD_FILES:
        own = load_space(REPO / "search_spaces" / f).teacher_needs(TINY_TEACHER)
        assert set(own.units) <= set(needs.units), f
        assert set(own.features) <= set(needs.features), f
        assert needs.logits or not own.logits, f


def composition(tmp_path, doc, **files) -> Path:
    for name, content in files.items():
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(content, sort_keys=False))
    return write(tmp_path, doc)


def test_composition_keeps_each_files_range_and_condition(tmp_path):
    kd = {"method": "kd", "params": {"optim.lr": {"type": "float", "low": 1e-4, "high": 1e-3},
                                     "kd.mode": {"type": "categorical", "choices": ["kd", "dkd"]},
                                     "kd.beta": {"type": "float", "low": 1, "high": 8, "when": {"kd.mode": "dkd"}}}}
    path = composition(tmp_path, {"compose": ["good.yaml", "kd.yaml"], "objectives": {"overall_score": "max",
                                                                                      "params": "min"}},
                       good=GOOD, kd=kd)
    space = load_space(path)
    assert space.methods() == ["dicehubert", "kd"] and space.objectives == {"overall_score": "max", "params": "min"}
    beta = next(p for p in space.params if p.path == "kd.beta")
    assert beta.name == "kd:kd.beta" and beta.when == {"method": ("kd",), "kd:kd.mode": ("dkd",)}
    assert space.config({"method": "kd", "kd:optim.lr": 5e-4}).optim.lr == 5e-4
    assert space.target_combos() == load_space(write(tmp_path, GOOD)).target_combos()


BAD_COMPOSITIONS = [
    ("missing file", {"compose": ["good.yaml", "nope.yaml"]}, "compose: nope.yaml does not exist"),
    ("not a list", {"compose": "good.yaml"}, "compose must be a non-empty list"),
    ("empty", {"compose": []}, "compose must be a non-empty list"),
    ("with params", {"compose": ["good.yaml"], "params": {}}, "compose cannot be combined with params"),
    ("with base", {"compose": ["good.yaml"], "base": {}, "smoke": {}}, "compose cannot be combined with base, smoke"),
    ("same method twice", {"compose": ["good.yaml", "again.yaml"]},
     "compose: good.yaml and again.yaml are both method dicehubert"),
    ("nested", {"compose": ["good.yaml", "nested.yaml"]}, "compose: nested.yaml composes other files itself"),
    ("several methods", {"compose": ["multi.yaml"]}, "compose: multi.yaml searches several methods itself"),
    ("bad composed file", {"compose": ["broken.yaml"]}, "broken.yaml: params.optim.lr: empty or inverted range"),
]


@pytest.mark.parametrize("name, doc, message", BAD_COMPOSITIONS, ids=[b[0] for b in BAD_COMPOSITIONS])
def test_bad_compositions_are_refused_with_one_clear_line(tmp_path, name, doc, message):
    multi = {"params": {"method": {"type": "categorical", "choices": ["dicehubert", "star"]}}}
    broken = {"method": "kd", "params": {"optim.lr": {"type": "float", "low": 1e-3, "high": 1e-4}}}
    path = composition(tmp_path, doc, good=GOOD, again=GOOD, nested={"compose": ["good.yaml"]}, multi=multi,
                       broken=broken)
    with pytest.raises(UserError) as err:
        load_space(path)
    text = str(err.value)
    assert message in text and "\n" not in text, text


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

"""The base-scale search spaces (search_spaces/base/): a HuBERT-base teacher (12 x 768, 500 units)
distilled on LibriSpeech. Every file loads with and without --smoke, its base runs the papers'
students and optimisation, its knobs reach every paper student, and its smoke section is a tiny
CPU run of the same students. Fast: configurations and parameter counts only, no Ray, no audio."""

from __future__ import annotations

from pathlib import Path

import pytest

from raydistill.config import TrainConfig
from raydistill.methods import describe
from raydistill.teacher.info import TeacherInfo
from raydistill.presets import preset
from raydistill.search.space import SearchSpace, load_space

REPO = Path(__file__).resolve().parents[1]
BASE = REPO / "search_spaces" / "base"
METHOD_FILES = {"dice.yaml": "dicehubert", "kd.yaml": "kd", "star.yaml": "star", "arm.yaml": "armhubert",
                "distil.yaml": "distilhubert"}
FILES = [*METHOD_FILES, "all.yaml"]
HUBERT_BASE = TeacherInfo(num_layers=12, embed_dim=768, num_classes=500)

RESOURCES = {"workers": 1, "cpus_per_worker": 8.0, "gpus_per_worker": 1.0}
SMOKE_RESOURCES = {"workers": 1, "cpus_per_worker": 1.0, "gpus_per_worker": 0.0}
TASKS = ("pr", "sid", "asr", "asv")  # LibriSpeech: phones (G2P), speakers, transcripts; no ks / ic / qbe


def space(name: str, smoke: bool = False) -> SearchSpace:
    return load_space(BASE / name, smoke=smoke)


def test_the_directory_holds_one_file_per_method_and_all():
    assert sorted(p.name for p in BASE.glob("*.yaml")) == sorted(FILES)


@pytest.mark.parametrize("smoke", [False, True])
@pytest.mark.parametrize("name", FILES)
def test_every_file_loads_with_its_resources_and_tasks(name, smoke):
    s = space(name, smoke)
    assert s.params
    assert s.resources == (SMOKE_RESOURCES if smoke else RESOURCES)
    assert s.tasks == TASKS
    if name != "all.yaml":
        assert s.methods() == [METHOD_FILES[name]]
        s.base_config()  # the base alone (no sampled value) is a valid configuration


@pytest.mark.parametrize("smoke", [False, True])
def test_all_yaml_composes_the_five_files_as_they_stand(smoke):
    composed = space("all.yaml", smoke)
    assert composed.methods() == list(METHOD_FILES.values())
    for name, method in METHOD_FILES.items():
        part = space(name, smoke)
        assert composed.base_for(method) == part.base_for(method), method
        own = sorted(p.path for p in part.params)
        assert sorted(p.path for p in composed.params if (p.when or {}).get("method") == (method,)) == own
    assert len(composed.params) == 1 + sum(len(space(n, smoke).params) for n in METHOD_FILES)


# ---------------------------------------------------------------------------------------------------
# The papers' students: reachable from each file (its base, or values its parameters can take),
# the same architectures as the presets, and the papers' parameter counts.

def reachable(s: SearchSpace, values: dict) -> None:
    """Assert that a trial of ``s`` can sample ``values``: every one a parameter's choice (or in its
    range), with its conditions met by the other values (or the base)."""
    base = s.base_config().to_dict()

    def current(path: str):
        if path in values:
            return values[path]
        d = base
        for part in path.split("."):
            d = d[part]
        return d

    by_path = {p.path: p for p in s.params}
    for path, value in values.items():
        assert path in by_path, f"{s.path}: {path} is not searched"
        p = by_path[path]
        if p.type == "categorical":
            assert value in p.choices, f"{s.path}: {path} = {value!r} is not among {p.choices}"
        else:
            assert p.low <= value <= p.high, f"{s.path}: {path} = {value!r} outside [{p.low}, {p.high}]"
        for ref, allowed in (p.when or {}).items():
            assert current(by_path[ref].path) in allowed, f"{s.path}: {path} needs {ref} in {allowed}"


# (file, values sampled, the preset with that student, size key the paper counts, paper figure)
PAPER_STUDENTS = [
    ("dice.yaml", {}, "dicehubert-narrow-d2", "params", 26_873_344),  # "26M" (truncated)
    ("dice.yaml", {"student.embed_dim": 192, "student.ffn_dim": 768}, "dicehubert-narrow-d4", "params", 9_934_144),
    ("dice.yaml", {"student.embed_dim": 768, "student.ffn_dim": 3072, "student.num_layers": 2},
     "dicehubert-shallow-l6", "params", 23_492_992),
    ("dice.yaml", {"student.embed_dim": 768, "student.ffn_dim": 3072, "student.num_layers": 3},
     "dicehubert-shallow-l4", "params", 30_580_864),
    ("kd.yaml", {}, "lstm-kd", "params", 17.60e6),  # the counted 4 x BiLSTM-384 (no published figure)
    ("star.yaml", {}, "starhubert", "params", 22.31e6),
    ("arm.yaml", {}, "armhubert", "params_train", 26.45e6),
    ("arm.yaml", {"student.reuse_pattern": "none", "student.ffn_dim": 640}, "maskhubert", "params_train", 26.64e6),
    ("distil.yaml", {}, "distilhubert", "params", 23.49e6),
]


@pytest.mark.parametrize("name,values,preset_name,key,paper", PAPER_STUDENTS,
                         ids=[f"{f}:{p}" for f, _, p, _, _ in PAPER_STUDENTS])
def test_paper_students_are_reachable_and_paper_sized(name, values, preset_name, key, paper):
    s = space(name)
    reachable(s, values)
    config = s.config(values)
    sizes = describe(config, HUBERT_BASE, macs=False)
    assert abs(sizes[key] - paper) / paper < 0.005, (preset_name, sizes, paper)
    preset_config = TrainConfig.from_dict(preset(preset_name)[1], where=preset_name)
    # the same architecture as the preset (the kd preset's teacher is HuBERT-large: its head differs)
    assert config.student == preset_config.student, preset_name
    assert sizes["params"] == describe(preset_config, HUBERT_BASE, macs=False)["params"]


def test_exact_counts_of_the_base_students():
    """The fairseq-style counts the presets are held to (mask embedding included, no feature
    projection when the CNN ends in the model width; ARM's heads in params_train)."""
    counts = {name: describe(space(name).base_config(), HUBERT_BASE, macs=False) for name in METHOD_FILES}
    assert counts["dice.yaml"]["params"] == 26_873_344
    assert counts["kd.yaml"]["params"] == 17_595_904
    assert counts["star.yaml"]["params"] == 22_309_024
    assert (counts["arm.yaml"]["params"], counts["arm.yaml"]["params_train"]) == (22_015_552, 26_448_448)
    assert counts["distil.yaml"]["params"] == 23_492_992


def test_arm_reinvestment_keeps_maskhubert_size():
    """FFN 640 with a reuse pattern and arm.reinvest_ffn: the saved Q/K parameters go back into the
    FFNs, so the student stays within 0.1 % of MaskHuBERT (26.64M with heads)."""
    s = space("arm.yaml")
    for pattern in ("2by6", "3by4", "4by3"):
        values = {"student.reuse_pattern": pattern, "student.ffn_dim": 640, "arm.reinvest_ffn": True}
        reachable(s, values)
        train = describe(s.config(values), HUBERT_BASE, macs=False)["params_train"]
        assert abs(train - 26_635_840) / 26_635_840 < 0.001, (pattern, train)


# ---------------------------------------------------------------------------------------------------
# The papers' knobs and optimisation.

def test_dice_teacher_layers_k_and_labels():
    s = space("dice.yaml")
    targets = s.base_config().targets
    assert (targets.teacher_layer, targets.num_clusters, targets.labels) == (9, 500, "hard")
    by_path = {p.path: p for p in s.params}
    assert by_path["targets.teacher_layer"].choices == (6, 9, 12)
    assert by_path["targets.num_clusters"].choices == (100, 500)
    assert by_path["targets.labels"].choices == ("hard", "soft")
    assert by_path["targets.temperature"].when == {"targets.labels": ("soft",)}
    needs = s.teacher_needs(HUBERT_BASE)
    assert (9, 500) in needs.units
    assert set(needs.units) == {(layer, k) for layer in (6, 9, 12) for k in (100, 500)}
    # soft labels read the unit layer (6, 9, 12), L_feat every layer its students map to (1-12)
    assert needs.features == tuple(range(1, 13))
    assert not needs.logits
    mask = s.base_config().mask
    assert (mask.prob, mask.length, mask.selection, mask.frac) == (0.8, 10, "static", 0.0)


def test_kd_reads_the_logits_only():
    needs = space("kd.yaml").teacher_needs(HUBERT_BASE)
    assert needs.logits and not needs.units and not needs.features
    kd = space("kd.yaml").base_config().kd
    assert (kd.mode, kd.alpha, kd.beta, kd.temperature) == ("dkd", 1.0, 4.0, 1.0)


def test_arm_masking_ratio_and_reuse_patterns_cover_twelve_layers():
    for smoke in (False, True):
        s = space("arm.yaml", smoke)
        by_path = {p.path: p for p in s.params}
        assert (by_path["mask.frac"].low, by_path["mask.frac"].high) == (0.2, 0.8)
        for pattern in by_path["student.reuse_pattern"].choices:
            student = s.config({"student.reuse_pattern": pattern}).student
            assert student.num_layers == 12
            assert len(student.computes_attention) == 12
        base = s.base_config()
        assert base.student.reuse_pattern == (True, False) * 6 and base.student.reuse_mode == "paper"
        assert (base.mask.selection, base.mask.frac, base.arm.masking) == ("uniform", 0.665, True)


def test_distil_predicts_teacher_thirds():
    base = space("distil.yaml").base_config()
    assert base.distil.teacher_layers == (4, 8, 12) and base.distil.init_from_teacher
    assert base.student.num_layers == 2 and base.student.embed_dim == 768


# The papers' optimisation: (lr, warm-up fraction, steps, batch seconds per worker, crop, CNN gradient scale)
OPTIM = {
    "dice.yaml": (5e-4, 0.08, 400_000, 87.5, 15.625, 0.1),  # HuBERT iteration 2, as DiceHuBERT
    "kd.yaml": (2e-4, 0.07, 200_000, 394, 15.625, 1.0),
    "star.yaml": (1e-3, 0.05, 586_000, 295, 35.0, 1.0),
    "arm.yaml": (5e-3, 0.05, 390_600, 221, 35.0, 1.0),
    "distil.yaml": (2e-4, 0.07, 200_000, 295, 15.625, 0.1),
}


@pytest.mark.parametrize("name", METHOD_FILES)
def test_base_optimisation_is_the_papers(name):
    s = space(name)
    optim = s.base_config().optim
    assert (optim.lr, optim.warmup_frac, optim.max_steps, optim.batch_seconds, optim.max_seconds,
            optim.feature_grad_mult) == OPTIM[name]
    lr = next(p for p in s.params if p.path == "optim.lr")
    assert lr.log and lr.low < optim.lr < lr.high  # the paper's rate lies inside the searched range
    assert s.base_config().eval_every == 50_000
    assert optim.grad_clip == (5.0 if name == "distil.yaml" else 10.0)


# ---------------------------------------------------------------------------------------------------
# Smoke: the same students, a few short CPU steps.

@pytest.mark.parametrize("name", METHOD_FILES)
def test_smoke_is_a_tiny_cpu_run_of_the_same_student(name):
    full, smoke = space(name), space(name, smoke=True)
    config = smoke.base_config()
    assert config.optim.max_steps <= 8 and config.optim.batch_seconds <= 8 and config.optim.max_seconds <= 4
    assert (config.optim.max_steps, config.eval_every) == (4, 2)  # one ASHA rung, then the end
    assert config.student == full.base_config().student
    assert smoke.resources["gpus_per_worker"] == 0
    # everything else is the base's: only optim's step, batch and crop, and eval_every, change
    a, b = full.base_config().to_dict(), config.to_dict()
    for d in (a, b):
        for key in ("max_steps", "batch_seconds", "max_seconds"):
            d["optim"].pop(key)
        d.pop("eval_every")
    assert a == b
    # every parameter's values stay valid under smoke (load_space checked them); same knobs
    assert [p.name for p in smoke.params] == [p.name for p in full.params]

"""Every distillation method trains end to end in the plain loop, against a real (tiny) teacher.

The teacher is a randomly initialised HuBERT with a pre-training head: real features,
attention maps and logits, the same code paths as the embedded teacher, in seconds.
"""

import dataclasses

import numpy as np
import pytest
import torch

from raydistill.config import TrainConfig
from raydistill.errors import UserError
from raydistill.methods import TeacherInfo, describe, get_method, layer_map, teacher_needs
from raydistill.models.checkpoint import STUDENT_FILE, load_student
from raydistill.models.hubert import HubertConfig, HubertModel, PredictionHead, hubert_conv
from raydistill.presets import PRESETS, preset
from raydistill.targets.store import LOGITS, TargetStore, TeacherNeeds
from raydistill.teacher.sources import Teacher
from raydistill.train.data import TrainData
from raydistill.train.loop import train

NO_DROPOUT = dict(dropout_input=0.0, attention_dropout=0.0, dropout=0.0, layer_drop=0.0)
CNN = [list(c) for c in hubert_conv(32)]
TEACHER = HubertConfig(conv_layers=hubert_conv(32), embed_dim=64, num_layers=2, num_heads=4, ffn_dim=128,
                       pos_conv_kernel=16, **NO_DROPOUT)
SMALL = {"conv_layers": CNN, "embed_dim": 32, "ffn_dim": 64, "num_layers": 2, "num_heads": 2,
         "pos_conv_kernel": 16, **NO_DROPOUT}
OPTIM = {"lr": 3e-3, "max_steps": 4, "batch_seconds": 8.0, "warmup_frac": 0.25, "feature_grad_mult": 1.0}

CONFIGS = {
    "dicehubert": {"method": "dicehubert", "student": SMALL, "targets": {"teacher_layer": 2, "num_clusters": 8},
                   "feat_weight": 0.1},
    "dicehubert-soft": {"method": "dicehubert", "student": SMALL,
                        "targets": {"teacher_layer": 2, "num_clusters": 8, "labels": "soft", "temperature": 2.0}},
    "kd": {"method": "kd", "student": {"arch": "lstm", "conv_layers": CNN, "hidden": 16, "num_layers": 2}},
    "kd-plain": {"method": "kd", "student": {"arch": "lstm", "conv_layers": CNN, "hidden": 16, "num_layers": 2},
                 "kd": {"mode": "kd", "temperature": 2.0, "head": "cosine"}},
    "star": {"method": "star", "student": SMALL, "star": {"attn_weight": 0.5, "distance": "kl"}},
    "armhubert": {"method": "armhubert", "student": {**SMALL, "reuse_pattern": "2by1"},
                  "mask": {"selection": "uniform", "prob": 0.4, "prob_end": 0.8}},
    "armhubert-nomask": {"method": "armhubert", "student": SMALL, "arm": {"masking": False, "loss": "l1"}},
    "distilhubert": {"method": "distilhubert", "student": {**TEACHER.to_dict(), "num_layers": 1}},
}


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    return Teacher(model=HubertModel(TEACHER), head=PredictionHead(64, 12, 32), spec="test", key="tiny-random")


@pytest.fixture(scope="module")
def store(tiny_corpus, teacher, tmp_path_factory):
    layers = tuple(range(TEACHER.num_layers + 1)) + (LOGITS,)
    return TargetStore(tmp_path_factory.mktemp("targets") / "t").ensure(
        teacher, tiny_corpus, tiny_corpus.split("train"), [(2, 8)], layers=layers)


def _config(name: str, **optim) -> TrainConfig:
    return TrainConfig.from_dict({**CONFIGS[name], "optim": {**OPTIM, **optim}, "eval_every": 2})


def _run(name, tiny_corpus, store, teacher, tmp_path, *, fixed=False, **optim):
    config = _config(name, **optim)
    info = TeacherInfo.of(teacher.describe())
    needs = teacher_needs(config, info)
    data = TrainData(tiny_corpus, store, needs, config.student.conv_layers)
    if fixed:  # one batch over and over: the loss must fall
        first = data.epoch_batches(8.0, 15.6, seed=0, epoch=0)[0][:4]
        batch = data.load(first, 15.6, np.random.default_rng(0))
        data.epoch_batches = lambda *a, **k: [first]
        data.load = lambda *a, **k: batch
    reports = []
    train(config, data, report=lambda m, c: reports.append((m, c)), checkpoint_dir=tmp_path,
          teacher=teacher.describe(), live_teacher=teacher if needs.live else None)
    return config, reports


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_method_trains_and_its_checkpoint_reloads(name, tiny_corpus, store, teacher, tmp_path):
    config, reports = _run(name, tiny_corpus, store, teacher, tmp_path)
    assert [m["step"] for m, _ in reports] == [2, 4]
    assert all(np.isfinite(m["loss"]) for m, _ in reports)
    reloaded, module, described = load_student(reports[-1][1] / STUDENT_FILE)
    assert reloaded == config and described["num_layers"] == TEACHER.num_layers
    wave = torch.randn(1, 8000)
    out = module.model(wave)
    assert len(out.states) == module.model.num_states >= config.student.num_layers


@pytest.mark.parametrize("name", ["dicehubert", "kd", "star", "armhubert-nomask", "distilhubert"])
def test_method_loss_falls_on_a_fixed_batch(name, tiny_corpus, store, teacher, tmp_path):
    _, reports = _run(name, tiny_corpus, store, teacher, tmp_path, fixed=True, max_steps=30, warmup_frac=0.1)
    first, last = reports[0][0]["loss"], reports[-1][0]["loss"]
    assert last < 0.8 * first, [m["loss"] for m, _ in reports]


def test_distilhubert_starts_from_the_teacher(teacher):
    config = _config("distilhubert")
    method = get_method("distilhubert")
    module = method.build(config, TeacherInfo.of(teacher.describe()))
    method.init_from_teacher(module, teacher, config)
    student, source = module.model.state_dict(), teacher.model.state_dict()
    shared = [k for k in student if k != "mask_emb"]
    assert shared and all(torch.equal(student[k], source[k]) for k in shared)
    wider = TrainConfig.from_dict({**CONFIGS["distilhubert"], "student": SMALL})
    with pytest.raises(UserError, match="init_from_teacher"):
        method.init_from_teacher(method.build(wider, TeacherInfo.of(teacher.describe())), teacher, wider)


def test_teacher_needs_of_each_method(teacher):
    info = TeacherInfo.of(teacher.describe())
    assert teacher_needs(_config("dicehubert"), info) == TeacherNeeds(units=((2, 8),), features=(1, 2))
    assert teacher_needs(_config("dicehubert-soft"), info) == TeacherNeeds(units=((2, 8),), features=(2,))
    assert teacher_needs(_config("kd"), info) == TeacherNeeds(logits=True)
    assert teacher_needs(_config("star"), info).live  # attention maps come from the live teacher
    assert teacher_needs(_config("armhubert"), info) == TeacherNeeds(live=True)  # masked-input teacher
    assert teacher_needs(_config("armhubert-nomask"), info) == TeacherNeeds(features=(1, 2))
    with pytest.raises(UserError, match="pre-training head"):
        teacher_needs(_config("kd"), TeacherInfo(2, 64, 0))


def test_cached_and_live_teacher_features_agree(tiny_corpus, store, teacher):
    """Cached features (whole utterances, float16) match the live teacher on the same audio."""
    utt = tiny_corpus.split("train")[0]
    wave = torch.from_numpy(tiny_corpus.load_audio(utt))[None]
    live = teacher.model(wave).states[2][0]
    start, frames = store.utterance_slices()[utt.id]
    cached = torch.from_numpy(np.asarray(store.features(2)[start:start + frames], dtype=np.float32))
    assert torch.allclose(live, cached, atol=2e-2, rtol=1e-2)
    logits = teacher.logits(live)
    cached_logits = torch.from_numpy(np.array(store.features(LOGITS)[start:start + frames]))
    assert (logits - cached_logits).abs().max() < 1e-4  # logits are cached exactly (float32)


def test_layer_map():
    assert layer_map(12, 12) == list(range(1, 13))
    assert layer_map(4, 12) == [3, 6, 9, 12]
    assert layer_map(3, 2) == [1, 1, 2]


# Paper sizes (METHODS.md §7): the presets must be within 0.5 % (params, or params_train where
# the paper counts the training heads).
PAPER = {
    "hubert-base": ("params_train", 94.70e6),
    "distilhubert": ("params", 23.49e6),
    "dicehubert-narrow-d2": ("params", 26_873_344),  # paper "26M" (truncated)
    "dicehubert-narrow-d4": ("params", 9_934_144),  # "9M"
    "dicehubert-shallow-l6": ("params", 23_492_992),  # "23M"
    "dicehubert-shallow-l4": ("params", 30_580_864),  # "30M"
    "maskhubert": ("params_train", 26.64e6),
    "armhubert": ("params_train", 26.45e6),
    "armhubert-s": ("params_train", 22.39e6),
    "starhubert": ("params", 22.31e6),
    "starhubert-l": ("params", 26.63e6),
    "lstm-kd": ("params", 17.60e6),  # exact figure not published: the counted 4 x BiLSTM-384 student
}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_sizes_match_the_papers(name):
    info, config = preset(name)
    sizes = describe(TrainConfig.from_dict(config, where=name), info, macs=False)
    key, paper = PAPER[name]
    assert abs(sizes[key] - paper) / paper < 0.005, (name, sizes, paper)
    assert sizes["params_train"] >= sizes["params"]


def test_presets_cover_the_issue():
    assert set(PAPER) == set(PRESETS)


@pytest.mark.parametrize("prob,low,high", [(0.8, 0.74, 0.80), (0.4, 0.37, 0.42)])
def test_uniform_masking_coverage_matches_armhubert(prob, low, high):
    """METHODS.md §1.3: uniform spans U{0..20}, no overlap, min_space 1 mask ≈ 0.75-0.79 of the
    frames at p = 0.8 and ≈ 0.39-0.40 at p = 0.4 (fairseq's mask_selection=uniform)."""
    from raydistill.config import MaskConfig
    from raydistill.train.masking import sample_mask

    cfg = MaskConfig(prob=prob, selection="uniform", min_space=1)
    generator = torch.Generator().manual_seed(0)
    covered = [sample_mask(cfg, [500], 500, generator=generator).float().mean().item() for _ in range(200)]
    assert low < float(np.mean(covered)) < high
    # no two spans touch: between masked runs there is at least min_space unmasked frame
    mask = sample_mask(cfg, [400, 380], 400, generator=generator)
    assert mask[1, 380:].sum() == 0 and mask[0].sum() == mask[1].sum()  # equal counts, none on padding


def test_static_masking_coverage_and_the_linear_schedule():
    from raydistill.config import MaskConfig
    from raydistill.train.masking import sample_mask

    generator = torch.Generator().manual_seed(0)
    cfg = MaskConfig(prob=0.8, length=10)
    covered = np.mean([sample_mask(cfg, [500], 500, generator=generator).float().mean().item() for _ in range(100)])
    assert 0.54 < covered < 0.59  # 1 - 0.92^10 = 0.566
    schedule = MaskConfig(prob=0.2, prob_end=0.8)
    assert schedule.prob_at(0, 101) == pytest.approx(0.2) and schedule.prob_at(100, 101) == pytest.approx(0.8)
    assert schedule.prob_at(50, 101) == pytest.approx(0.5)


def test_describe_cli_prints_the_sizes(capsys, tmp_path):
    import json

    import yaml

    from raydistill.cli import main

    assert main(["describe", "--preset", "armhubert", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["params_train"] == 26_448_448 and out["params"] < out["params_train"] and out["macs_per_second"] > 0
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"train": CONFIGS["kd"]}))
    assert main(["describe", "--config", str(config), "--teacher-shape", "tiny-teacher"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["method"] == "kd" and out["params_train"] == out["params"] + 32 * 100 + 100
    assert main(["describe", "--preset", "nope"]) == 2


@pytest.mark.parametrize("name", ["distilhubert", "kd"])
def test_an_exploding_learning_rate_stops_the_run_as_diverged(name, tiny_corpus, store, teacher, tmp_path):
    from raydistill.train.loop import Diverged

    with pytest.raises(Diverged, match=r"loss became (nan|inf) at step \d"):
        _run(name, tiny_corpus, store, teacher, tmp_path, lr=1e30, max_steps=8, warmup_frac=0.0)


def test_the_random_init_reference_is_keyed_by_the_students_initial_weights(tiny_corpus, teacher, tmp_path):
    """Trials that differ only in training settings share one random-init score; another
    architecture gets its own."""
    from raydistill.prepare import Workdir
    from raydistill.search.baselines import Baselines

    baselines = Baselines(Workdir(tmp_path), tiny_corpus, teacher, None, "smoke")
    base = _config("dicehubert")
    key = baselines.key("random_init", base.to_dict())
    assert baselines.key("random_init", _config("dicehubert", lr=1e-4).to_dict()) == key
    assert baselines.key("random_init", dataclasses.replace(base, feat_weight=0.5).to_dict()) == key
    wider = TrainConfig.from_dict({**CONFIGS["dicehubert"], "student": {**SMALL, "ffn_dim": 128}, "optim": OPTIM})
    assert baselines.key("random_init", wider.to_dict()) != key
    assert baselines.key("random_init", _config("star").to_dict()) == key  # same student, same seed

"""Every distillation method trains end to end in the plain loop, against a real (tiny) teacher.

The teacher is a randomly initialised HuBERT with a pre-training head: real features,
attention maps and logits, the same code paths as the embedded teacher, in seconds.
"""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from raydistill.config import ArmConfig, TrainConfig
from raydistill.errors import UserError
from raydistill.methods import describe, get_method, layer_map, teacher_needs
from raydistill.teacher.info import TeacherInfo
from raydistill.methods import load_student
from raydistill.models.checkpoint import STUDENT_FILE
from raydistill.models.config import HubertConfig, hubert_conv
from raydistill.models.heads import PredictionHead
from raydistill.models.hubert import HubertModel
from raydistill.presets import RUN_PRESETS, preset
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
    info = teacher.info
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
    module = method.build(config, teacher.info)
    method.init_from_teacher(module, teacher, config)
    student, source = module.model.state_dict(), teacher.model.state_dict()
    shared = [k for k in student if k != "mask_emb"]
    assert shared and all(torch.equal(student[k], source[k]) for k in shared)
    wider = TrainConfig.from_dict({**CONFIGS["distilhubert"], "student": SMALL})
    with pytest.raises(UserError, match="init_from_teacher"):
        method.init_from_teacher(method.build(wider, teacher.info), teacher, wider)


def test_kd_student_cnn_starts_from_the_teachers_when_asked(teacher):
    method, info = get_method("kd"), teacher.info
    source = teacher.model.encoder.feature_extractor.state_dict()

    def student_cnn(config):
        module = method.build(config, info)
        method.init_from_teacher(module, teacher, config)
        return module.model.feature_extractor.state_dict()

    on = TrainConfig.from_dict({**CONFIGS["kd"], "kd": {"init_cnn_from_teacher": True}})
    copied = student_cnn(on)
    assert copied.keys() == source.keys() and all(torch.equal(copied[k], source[k]) for k in source)
    assert teacher_needs(on, info) == TeacherNeeds(logits=True, live=True)  # the trial loads the teacher
    fresh = student_cnn(_config("kd"))  # the default: a random CNN
    assert not any(torch.equal(fresh[k], source[k]) for k in source if k.endswith("conv.weight"))
    narrow_cnn = {**CONFIGS["kd"]["student"], "conv_layers": hubert_conv(16)}
    narrow = TrainConfig.from_dict({**CONFIGS["kd"], "student": narrow_cnn, "kd": {"init_cnn_from_teacher": True}})
    with pytest.raises(UserError, match="init_cnn_from_teacher"):
        student_cnn(narrow)


def test_star_attention_maps_and_student_layer_drop_are_refused_together():
    """A layer that layer drop skips computes no attention map: the step used to crash on it
    ('NoneType' object has no attribute 'shape'); the config now refuses the pair."""
    config = {**CONFIGS["star"], "student": {**SMALL, "layer_drop": 0.5}, "star": {"attn_weight": 1.0}}
    with pytest.raises(UserError, match=r"star\.attn_weight.*student\.layer_drop"):
        TrainConfig.from_dict(config)
    assert TrainConfig.from_dict({**config, "star": {"attn_weight": 0.0}}).student.layer_drop == 0.5
    assert TrainConfig.from_dict({**config, "student": SMALL}).star.attn_weight == 1.0


@pytest.mark.parametrize("norm", [None, "fairseq", "per_term"])
def test_dicehubert_unmasked_frames_normalisation_by_hand(norm):
    """fairseq's HuBERT criterion divides the masked and the (weighted) unmasked sums by one
    count, masked + unmasked frames (the default); ``per_term`` divides each by its own count."""
    import math
    from types import SimpleNamespace

    from raydistill.methods import StepContext
    from raydistill.models.hubert import HubertOutput
    from raydistill.train.data import Batch

    logits = torch.tensor([[[2.0, 0.0, -1.0], [0.5, 1.5, 0.0], [0.0, 0.0, 3.0], [1.0, -2.0, 0.5]]])  # [1, 4, 3]
    labels = torch.tensor([[0, 2, 2, 1]])
    mask = torch.tensor([[True, False, False, False]])  # 1 masked frame, 3 unmasked
    ce = [math.log(sum(math.exp(v) for v in row)) - row[y] for row, y in zip(logits[0].tolist(), labels[0].tolist())]
    expected = {"fairseq": (ce[0] + 0.5 * (ce[1] + ce[2] + ce[3])) / 4,
                "per_term": ce[0] / 1 + 0.5 * (ce[1] + ce[2] + ce[3]) / 3}[norm or "fairseq"]

    def loss(**options):
        config = TrainConfig.from_dict({"method": "dicehubert", "student": SMALL, "feature_pen_weight": 0.0,
                                        "targets": {"teacher_layer": 2, "num_clusters": 3}, **options})
        batch = Batch(wave=torch.zeros(1, 400), labels=labels, features={}, seconds=0.0)
        ctx = StepContext(config, 0, batch, teacher_info=TeacherInfo(2, 64), teacher=None, centroids=None,
                          device=torch.device("cpu"), world=1)
        out = HubertOutput([logits], None, None, torch.tensor(0.0))  # the head is the identity: states are logits
        return get_method("dicehubert").loss(SimpleNamespace(head=torch.nn.Identity()), out, mask, ctx)[0].item()

    options = {} if norm is None else {"nomask_norm": norm}
    assert loss(nomask_weight=0.5, **options) == pytest.approx(expected, rel=1e-6)
    # without the unmasked term both are fairseq's sample size = the masked count
    assert loss(nomask_weight=0.0, **options) == pytest.approx(ce[0], rel=1e-6)


def test_dicehubert_soft_labels_by_hand():
    """Soft labels are ``softmax_k(-‖h - c_k‖ / τ)`` over the run's k-means centroids (Euclidean
    distance, not squared) and the loss is the masked mean of ``KL(q ‖ p)``; as τ → 0 it becomes
    the hard loss on the nearest unit, and at a large τ it is another loss."""
    import math
    from types import SimpleNamespace

    from raydistill.methods import StepContext
    from raydistill.models.hubert import HubertOutput
    from raydistill.train.data import Batch

    logits = torch.tensor([[[2.0, 0.0, -1.0], [0.5, 1.5, 0.0], [0.0, 0.5, 3.0], [1.0, -2.0, 0.5]]])  # [1, 4, 3]
    features = [[1.0, 0.0], [2.5, 0.5], [0.5, 3.0], [3.0, 1.0]]  # teacher layer 2, [4, 2]
    centroids = [[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]]
    nearest = [0, 1, 2, 1]  # by hand: the closest centroid of each frame
    mask = torch.tensor([[True, False, True, True]])
    masked = [0, 2, 3]

    def by_hand(tau):
        total = 0.0
        for t in masked:
            weights = [math.exp(-math.dist(features[t], c) / tau) for c in centroids]
            q = [w / sum(weights) for w in weights]
            row = logits[0, t].tolist()
            log_z = math.log(sum(math.exp(v) for v in row))
            total += sum(qk * (math.log(qk) - (v - log_z)) for qk, v in zip(q, row) if qk > 0)
        return total / len(masked)

    def loss(labels, tau=1.0):
        config = TrainConfig.from_dict({"method": "dicehubert", "student": SMALL, "feature_pen_weight": 0.0,
                                        "targets": {"teacher_layer": 2, "num_clusters": 3, "labels": labels,
                                                    "temperature": tau}})
        batch = Batch(wave=torch.zeros(1, 400), labels=torch.tensor([nearest]), features={2: torch.tensor([features])},
                      seconds=0.0)
        ctx = StepContext(config, 0, batch, teacher_info=TeacherInfo(2, 64), teacher=None,
                          centroids=torch.tensor(centroids), device=torch.device("cpu"), world=1)
        out = HubertOutput([logits], None, None, torch.tensor(0.0))  # the head is the identity: states are logits
        return get_method("dicehubert").loss(SimpleNamespace(head=torch.nn.Identity()), out, mask, ctx)[0].item()

    for tau in (0.5, 2.0, 10.0):
        assert loss("soft", tau) == pytest.approx(by_hand(tau), rel=1e-5)
    hard = loss("hard")
    gaps = [abs(loss("soft", tau) - hard) for tau in (1.0, 0.5, 0.25, 0.1, 1e-3)]
    assert gaps == sorted(gaps, reverse=True) and gaps[-1] < 1e-6  # τ → 0: one-hot labels, the hard loss
    assert abs(loss("soft", 10.0) - hard) > 0.3  # near-uniform labels: not the hard loss


def test_the_embedded_teacher_keeps_its_per_term_loss_and_its_cache_key():
    """The embedded teacher was pretrained with each sum over its own count: it keeps that loss,
    and the option at that value stays out of its cache key (the cached teacher is reused)."""
    from raydistill.train.pretrain import EMBEDDED_TEACHER, SMOKE_TEACHER, _identity

    for config in (EMBEDDED_TEACHER, SMOKE_TEACHER):
        assert config.nomask_weight > 0 and config.nomask_norm == "per_term"
        assert "nomask_norm" not in _identity(config)
    fairseq = dataclasses.replace(EMBEDDED_TEACHER, nomask_norm="fairseq")
    assert _identity(fairseq)["nomask_norm"] == "fairseq"  # another loss: another teacher


def test_teacher_needs_of_each_method(teacher):
    info = teacher.info
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


# Paper sizes (docs/methods.md#paper-parameter-counts): the presets must be within 0.5 % (params,
# or params_train where the paper counts the training heads).
PAPER = {
    "hubert-base": ("params_train", 94.70e6),
    "distilhubert": ("params", 23.49e6),
    "dicehubert-narrow-d2": ("params", 26_873_344),  # paper "26M" (truncated)
    "dicehubert-narrow-d4": ("params", 9_934_144),  # "9M"
    "dicehubert-shallow-l6": ("params", 23_492_992),  # "23M"
    "dicehubert-shallow-l4": ("params", 30_580_864),  # "30M"
    "maskhubert": ("params_train", 26.64e6),
    "armhubert": ("params_train", 26.45e6),
    "armhubert-released": ("params_train", 26.45e6),
    "armhubert-s": ("params_train", 22.39e6),
    "starhubert": ("params", 22.31e6),
    "starhubert-l": ("params", 26.63e6),
    "lstm-kd": ("params", 17.60e6),  # exact figure not published: the counted 4 x BiLSTM-384 student
}


@pytest.mark.parametrize("name", sorted(RUN_PRESETS))
def test_preset_sizes_match_the_papers(name):
    info, config = preset(name)
    sizes = describe(TrainConfig.from_dict(config, where=name), info, macs=False)
    key, paper = PAPER[name]
    assert abs(sizes[key] - paper) / paper < 0.005, (name, sizes, paper)
    assert sizes["params_train"] >= sizes["params"]


def test_presets_cover_the_issue():
    assert set(PAPER) == set(RUN_PRESETS)


def test_armhubert_released_preset_carries_the_released_training_settings(capsys):
    """The released ARMHuBERT's recipe beside the paper's definition, at the same size (d 480,
    FFN 864 with the Q/K of every other layer re-invested): 22,015,552 parameters, 26,448,448
    with the 12 projection heads."""
    import json

    from raydistill.cli import main

    assert main(["describe", "--preset", "armhubert-released", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["params"], out["params_train"]) == (22_015_552, 26_448_448)
    released = TrainConfig.from_dict(preset("armhubert-released")[1])
    student = released.student
    assert (student.embed_dim, student.ffn_dim, student.reuse_pattern) == (480, 864, (True, False) * 6)
    assert student.reuse_mode == "reference_code" and student.layer_grad_scale and student.layer_drop == 0.0
    mask = released.mask
    assert (mask.selection, mask.prob, mask.length, mask.min_space) == ("uniform", 0.8, 10, 1)
    assert released.arm == ArmConfig(masking=True, hint_weight=0.1, final_weight=1.0, loss="mse", reinvest_ffn=False)
    assert (released.optim.lr, released.optim.warmup_frac, released.optim.feature_grad_mult) == (5e-3, 0.05, 1.0)
    paper = TrainConfig.from_dict(preset("armhubert")[1])
    assert paper.student == dataclasses.replace(student, reuse_mode="paper", layer_grad_scale=False)


@pytest.mark.parametrize("prob,low,high", [(0.8, 0.74, 0.80), (0.4, 0.37, 0.42)])
def test_uniform_masking_coverage_matches_armhubert(prob, low, high):
    """Uniform spans U{0..20}, no overlap, min_space 1 mask ≈ 0.75-0.79 of the frames at p = 0.8
    and ≈ 0.39-0.40 at p = 0.4 (fairseq's mask_selection=uniform; docs/methods.md#span-masking)."""
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


@pytest.mark.parametrize("selection", ["static", "uniform"])
@pytest.mark.parametrize("frac", [0.2, 0.5, 0.8])
def test_mask_frac_masks_that_fraction_of_every_row(selection, frac):
    """``mask.frac`` is the fraction of frames masked, on long and on short rows alike, where
    fairseq's ``prob`` masks far less of a short row than of a long one."""
    from raydistill.config import MaskConfig
    from raydistill.train.masking import sample_mask

    generator = torch.Generator().manual_seed(0)
    cfg = MaskConfig(selection=selection, frac=frac, min_space=1)
    for frames, rows in ((60, 10), (133, 10), (600, 18)):
        for _ in range(5):
            mask = sample_mask(cfg, [frames] * rows, frames, generator=generator)
            assert mask.sum(1).tolist() == [round(frac * frames)] * rows
    by_prob = MaskConfig(selection=selection, prob=0.8)
    short = np.mean([sample_mask(by_prob, [60] * 10, 60, generator=generator).float().mean().item() for _ in range(20)])
    long = np.mean([sample_mask(by_prob, [600] * 10, 600, generator=generator).float().mean().item() for _ in range(20)])
    assert short < long - 0.05


def test_mask_frac_options_are_checked():
    from raydistill.config import MaskConfig

    assert MaskConfig(frac=0.2, frac_end=0.8).frac_at(50, 101) == pytest.approx(0.5)
    assert MaskConfig().frac_at(10, 100) == 0.0
    for bad, message in (({"frac": 1.0}, "frac must be in"), ({"frac_end": 0.5}, "set frac too"),
                         ({"frac": 0.5, "prob_end": 0.6}, "exclude each other")):
        with pytest.raises(ValueError, match=message):
            MaskConfig(**bad)


def test_new_options_leave_the_embedded_teachers_cache_key_alone():
    """The names of the cached embedded teachers, pinned: an option added to TrainConfig at the
    value those teachers were trained with must not move them (every existing workdir would
    pretrain its teacher again, ≈ 10 min, for the same weights)."""
    from types import SimpleNamespace

    from raydistill.train.pretrain import EMBEDDED_TEACHER, SMOKE_TEACHER, teacher_dir

    corpus = SimpleNamespace(key="0123456789abcdef")
    assert teacher_dir(corpus, Path("/cache"), EMBEDDED_TEACHER).name == "embedded-5627c75af310"
    assert teacher_dir(corpus, Path("/cache"), SMOKE_TEACHER).name == "embedded-1c17137953cf"
    masked_by_fraction = dataclasses.replace(EMBEDDED_TEACHER, mask=dataclasses.replace(EMBEDDED_TEACHER.mask, frac=0.5))
    assert teacher_dir(corpus, Path("/cache"), masked_by_fraction).name != "embedded-5627c75af310"

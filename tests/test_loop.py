"""The plain-PyTorch training loop: learning, reporting, checkpoints, resume, divergence."""

import dataclasses

import numpy as np
import pytest
import torch

from raydistill.config import TrainConfig
from raydistill.methods import load_student
from raydistill.models.checkpoint import STATE_FILE, STUDENT_FILE
from raydistill.targets.store import TargetStore
from raydistill.teacher.mfcc import MfccSource
from raydistill.train.data import TrainData
from raydistill.train.loop import Diverged, train

CONFIG = TrainConfig.from_dict({
    "student": {"preset": "tiny-teacher", "embed_dim": 64, "ffn_dim": 128, "num_layers": 2, "num_heads": 4},
    "targets": {"teacher_layer": 0, "num_clusters": 8},
    "optim": {"lr": 2e-3, "max_steps": 6, "batch_seconds": 8.0, "warmup_frac": 0.2},
    "eval_every": 3,
})


@pytest.fixture(scope="module")
def data(tiny_corpus, tmp_path_factory):
    store = TargetStore(tmp_path_factory.mktemp("targets") / "mfcc")
    store.ensure(MfccSource(), tiny_corpus, tiny_corpus.split("train"), [(0, 8)], layers=[0])
    return TrainData(tiny_corpus, store, CONFIG.targets, CONFIG.student.conv_layers)


def test_reports_at_each_evaluation_with_a_checkpoint(data, tmp_path):
    reports = []
    evaluated = []
    train(CONFIG, data, report=lambda m, c: reports.append((m, c)), checkpoint_dir=tmp_path,
          evaluate=lambda model, final: evaluated.append(final) or {"probe_score": 1.0},
          teacher={"spec": "mfcc39"})
    assert [m["step"] for m, _ in reports] == [3, 6]
    assert evaluated == [False, True]
    metrics, ckpt = reports[-1]
    assert metrics["probe_score"] == 1.0 and metrics["audio_seconds_per_second"] > 0
    assert {"loss", "unit_acc", "lr", "grad_norm", "train_seconds"} <= set(metrics)
    assert 100 < metrics["peak_host_mb"] < 24 * 1024 and metrics["resumed_from_step"] == 0
    assert (ckpt / STUDENT_FILE).is_file() and (ckpt / STATE_FILE).is_file()
    config, module, teacher = load_student(ckpt / STUDENT_FILE)
    assert config == CONFIG and teacher == {"spec": "mfcc39"} and not module.training


def test_it_learns_a_fixed_batch(data, tmp_path, monkeypatch):
    """Overfitting one batch (fresh masks every step) must drive the masked loss down."""
    first = data.epoch_batches(8.0, 15.6, seed=0, epoch=0)[0][:4]
    fixed = data.load(first, 15.6, np.random.default_rng(0))
    monkeypatch.setattr(data, "epoch_batches", lambda *a, **k: [first])
    monkeypatch.setattr(data, "load", lambda *a, **k: fixed)
    config = dataclasses.replace(CONFIG, optim=dataclasses.replace(CONFIG.optim, max_steps=24, lr=5e-3), eval_every=8)
    reports = []
    train(config, data, report=lambda m, c: reports.append(m), checkpoint_dir=tmp_path)
    assert reports[-1]["masked_loss"] < reports[0]["masked_loss"] - 0.25, reports
    assert reports[-1]["unit_acc"] > reports[0]["unit_acc"] + 0.1


def test_resume_continues_from_the_checkpoint(data, tmp_path):
    first = []
    train(dataclasses.replace(CONFIG, optim=dataclasses.replace(CONFIG.optim, max_steps=3)), data,
          report=lambda m, c: first.append(m), checkpoint_dir=tmp_path / "a")
    resumed = []
    train(CONFIG, data, report=lambda m, c: resumed.append(m), checkpoint_dir=tmp_path / "b", resume=tmp_path / "a")
    assert [m["step"] for m in resumed] == [6]  # only the remaining evaluation
    state = torch.load(tmp_path / "b" / STATE_FILE, weights_only=True)
    assert state["step"] == 6


def test_a_torn_training_state_starts_the_run_over(data, tmp_path, capsys):
    """A ``trainer_state.pt`` cut short (a full disk before writes were atomic, a copy that died)
    is not resumed from: the run says so and starts from step 0."""
    torn = tmp_path / "torn"
    torn.mkdir()
    (torn / STATE_FILE).write_bytes(b"PK\x03\x04" + bytes(100))
    reports = []
    train(CONFIG, data, report=lambda m, c: reports.append(m), checkpoint_dir=tmp_path / "b", resume=torn)
    assert [m["step"] for m in reports] == [3, 6] and reports[0]["resumed_from_step"] == 0
    assert f"cannot resume: cannot read training state {torn / STATE_FILE}" in capsys.readouterr().err


def test_soft_labels_train_on_the_runs_centroids_and_temperature(tiny_corpus, tmp_path, monkeypatch):
    """With ``labels: soft`` every step's targets are the soft labels of its frames' cached
    teacher features against the run's k-means centroids at the configured τ (their formula is
    tested by hand in test_methods.py), not the hard units."""
    import raydistill.methods.dice as dice

    store = TargetStore(tmp_path / "mfcc").ensure(MfccSource(), tiny_corpus, tiny_corpus.split("train"), [(0, 8)], layers=[0])
    config = dataclasses.replace(CONFIG, targets=dataclasses.replace(CONFIG.targets, labels="soft", temperature=5.0))
    data = TrainData(tiny_corpus, store, config.targets, config.student.conv_layers)
    calls, real = [], dice.soft_unit_labels

    def spy(features, centroids, temperature):
        calls.append((features.clone(), centroids.clone(), temperature))
        return real(features, centroids, temperature)

    monkeypatch.setattr(dice, "soft_unit_labels", spy)
    reports = []
    train(config, data, report=lambda m, c: reports.append(m), checkpoint_dir=tmp_path / "ckpt")
    assert len(calls) == config.optim.max_steps and all(np.isfinite(m["loss"]) for m in reports)
    cached = torch.from_numpy(np.asarray(store.features(0), dtype=np.float32))  # stored as float16
    for features, centroids, temperature in calls:
        assert temperature == 5.0
        torch.testing.assert_close(centroids, torch.from_numpy(store.centroids(0, 8)), rtol=0, atol=0)
        # the masked frames' rows of the layer-0 feature cache
        assert len(features) > 0 and features.shape[1] == cached.shape[1]
        assert (torch.cdist(features, cached, compute_mode="donot_use_mm_for_euclid_dist").min(1).values < 1e-3).all()


def test_nan_loss_stops_training(data, tmp_path, monkeypatch):
    original = data.load

    def poisoned(*args, **kwargs):
        batch = original(*args, **kwargs)
        batch.wave[:] = float("nan")
        return batch

    monkeypatch.setattr(data, "load", poisoned)
    with pytest.raises(Diverged, match="loss became nan at step 0"):
        train(CONFIG, data, report=lambda m, c: None, checkpoint_dir=tmp_path)


def test_bf16_autocast_trains_and_reports(data, tmp_path):
    """optim.precision: bf16 autocast (the GPU default) works on CPU too. (optim.compile is
    measured by bench/step.py: inductor takes minutes to compile on 2 CPU cores.)"""
    from raydistill.train.loop import autocast_dtype

    assert autocast_dtype("auto", torch.device("cpu")) is None
    assert autocast_dtype("auto", torch.device("cuda")) is torch.bfloat16
    config = dataclasses.replace(CONFIG, optim=dataclasses.replace(CONFIG.optim, precision="bf16"))
    reports = []
    train(config, data, report=lambda m, c: reports.append((m, c)), checkpoint_dir=tmp_path)
    metrics, ckpt = reports[-1]
    assert np.isfinite(metrics["loss"]) and metrics["resumed_from_step"] == 0
    loaded, module, _ = load_student(ckpt / STUDENT_FILE)
    assert loaded.optim.precision == "bf16"


def test_read_ahead_keeps_order_and_raises_the_loaders_error():
    """The CUDA path prepares batch k+1 in a thread while step k runs (pinned memory there)."""
    from raydistill.train.loop import read_ahead

    assert list(read_ahead(range(5), lambda x: x * 10)) == [0, 10, 20, 30, 40]

    def items():
        yield 1
        raise OSError("corrupt.flac")

    out = read_ahead(items(), lambda x: x)
    assert next(out) == 1
    with pytest.raises(OSError, match="corrupt.flac"):
        next(out)


def test_every_masking_method_logs_what_it_masked(data, tmp_path, monkeypatch):
    """``mask_frac`` is the fraction of frames the step really masked: a DiceHuBERT run logs it
    (not only ARMHuBERT), and with ``mask.frac`` it equals the target, step by step."""
    import raydistill.train.loop as loop

    seen = []
    original = loop.sample_mask
    monkeypatch.setattr(loop, "sample_mask", lambda *a, **k: seen.append(original(*a, **k)) or seen[-1])
    reports = []
    train(CONFIG, data, report=lambda m, c: reports.append(m), checkpoint_dir=tmp_path / "prob")
    assert [r["mask_frac"] for r in reports] == pytest.approx(
        [np.mean([float(m.float().mean()) for m in seen[i:i + 3]]) for i in (0, 3)])
    assert all(r["mask_frac"] < 0.7 for r in reports)  # prob 0.8 is not 80 % of the frames
    target = dataclasses.replace(CONFIG, mask=dataclasses.replace(CONFIG.mask, frac=0.3, frac_end=0.6))
    seen.clear()
    reports = []
    train(target, data, report=lambda m, c: reports.append(m), checkpoint_dir=tmp_path / "frac")
    fractions = [float(m.float().mean()) for m in seen]  # the linear schedule 0.3 -> 0.6 over 6 steps
    assert fractions == pytest.approx([0.3 + 0.3 * s / 5 for s in range(6)], abs=0.02)
    assert reports[-1]["mask_frac"] == pytest.approx(np.mean(fractions[3:]))


def _reference_run(config, data):
    """The loop as a plain PyTorch loop: one batch per step, the loss read and checked every step."""
    from raydistill.methods import StepContext, get_method
    from raydistill.teacher.info import TeacherInfo
    from raydistill.train.loop import lr_lambda
    from raydistill.train.masking import sample_mask

    opt, method, info = config.optim, get_method(config.method), TeacherInfo(0, 0)
    torch.manual_seed(config.seed)
    module = method.build(config, info)
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=opt.lr, betas=opt.betas,
                                  eps=opt.eps, weight_decay=opt.weight_decay, fused=False)
    warmup = max(1, int(opt.warmup_frac * opt.max_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_lambda(s, warmup, opt.max_steps))
    mask_rng = torch.Generator().manual_seed(config.seed * 1000)
    batches = data.iterate(opt.batch_seconds, opt.max_seconds, seed=config.seed)
    losses = []
    module.train()
    for step in range(opt.max_steps):
        batch = next(batches)
        frames = module.model.frames(batch.wave.shape[1])
        mask = sample_mask(config.mask, [frames] * batch.wave.shape[0], frames, prob=config.mask.prob_at(step, opt.max_steps),
                           frac=config.mask.frac_at(step, opt.max_steps), generator=mask_rng)
        ctx = StepContext(config, step, batch, teacher_info=info, teacher=None, centroids=None,
                          device=torch.device("cpu"), world=1)
        loss, _ = method.loss(module, method.forward(module, batch.wave, mask, config), mask, ctx)
        assert torch.isfinite(loss)
        optimizer.zero_grad(set_to_none=True)
        loss.float().backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), opt.grad_clip)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    return module.state_dict(), losses


def test_one_micro_batch_per_step_is_the_plain_loop_bit_for_bit(data, tmp_path):
    """grad_accum 1 (the default): metrics on the device and the deferred divergence check change
    no weight and no logged loss."""
    config = dataclasses.replace(CONFIG, optim=dataclasses.replace(CONFIG.optim, max_steps=4), eval_every=2)
    reports = []
    train(config, data, report=lambda m, c: reports.append((m, c)), checkpoint_dir=tmp_path)
    weights, losses = _reference_run(config, data)
    trained = torch.load(reports[-1][1] / STATE_FILE, weights_only=True)["module"]
    assert trained.keys() == weights.keys() and all(torch.equal(trained[k], weights[k]) for k in weights)
    assert [m["loss"] for m, _ in reports] == [(losses[0] + losses[1]) / 2, (losses[2] + losses[3]) / 2]


NO_DROPOUT = dict(dropout_input=0.0, attention_dropout=0.0, dropout=0.0, layer_drop=0.0)


def test_two_micro_batches_make_one_step_on_both(data, tmp_path, monkeypatch):
    """grad_accum 2 on micro-batches A and B is one step on the batch A + B: same loss, same
    gradient norm, same weights (the student has no batch-dependent layer; dropout off, one mask
    pattern for every row)."""
    import raydistill.train.loop as loop
    from raydistill.train.data import Batch

    indices = data.epoch_batches(8.0, 15.6, seed=0, epoch=0)[0][:4]
    both = data.load(indices, 15.6, np.random.default_rng(0))
    halves = [Batch(both.wave[rows], both.labels[rows], {}, both.seconds / 2) for rows in (slice(0, 2), slice(2, 4))]

    def every_third_frame(cfg, lengths, frames, **kwargs):
        return (torch.arange(frames) % 3 == 0).expand(len(lengths), frames).clone()

    monkeypatch.setattr(loop, "sample_mask", every_third_frame)
    student = dataclasses.replace(CONFIG.student, **NO_DROPOUT)
    runs = {}
    for accum, stream in ((1, [both]), (2, halves)):
        monkeypatch.setattr(data, "iterate", lambda *a, stream=stream, **k: iter(stream * 10))
        config = dataclasses.replace(CONFIG, student=student, eval_every=1,
                                     optim=dataclasses.replace(CONFIG.optim, max_steps=3, grad_accum=accum))
        reports = []
        train(config, data, report=lambda m, c: reports.append(m), checkpoint_dir=tmp_path / str(accum))  # noqa: B023 (train calls it now)
        runs[accum] = reports, torch.load(tmp_path / str(accum) / STATE_FILE, weights_only=True)["module"]
    (one, w1), (two, w2) = runs[1], runs[2]
    for key in ("loss", "masked_loss", "grad_norm", "unit_acc", "mask_frac"):
        assert [m[key] for m in two] == pytest.approx([m[key] for m in one], rel=1e-5), key
    assert two[0]["audio_seconds_per_second"] > 0 and [m["step"] for m in two] == [1, 2, 3]
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=1e-6)


def _poisoned_from(data, monkeypatch, first: int) -> list:
    """Batches ``first``, ``first + 1``, ... are NaN; returns the list of loaded batch numbers."""
    original, loaded = data.load, []

    def load(*args, **kwargs):
        batch = original(*args, **kwargs)
        loaded.append(len(loaded))
        if loaded[-1] >= first:
            batch.wave[:] = float("nan")
        return batch

    monkeypatch.setattr(data, "load", load)
    return loaded


def test_a_later_nan_ends_the_run_at_the_next_report_and_keeps_the_last_good_checkpoint(data, tmp_path, monkeypatch):
    """The check is deferred to the report, but still names the step, and comes before the
    checkpoint: the one on disk is the last good one."""
    _poisoned_from(data, monkeypatch, 4)
    reports = []
    with pytest.raises(Diverged, match="loss became nan at step 4"):
        train(CONFIG, data, report=lambda m, c: reports.append(m), checkpoint_dir=tmp_path)
    assert [m["step"] for m in reports] == [3]
    state = torch.load(tmp_path / STATE_FILE, weights_only=True)
    assert state["step"] == 3 and all(torch.isfinite(v).all() for v in state["module"].values())


def test_divergence_is_checked_between_reports_and_counts_optimizer_steps(data, tmp_path, monkeypatch):
    """With reports far apart, the watch is still read every CHECK_EVERY steps; with gradient
    accumulation the step named is the optimizer step."""
    import raydistill.train.loop as loop

    monkeypatch.setattr(loop, "CHECK_EVERY", 2)
    loaded = _poisoned_from(data, monkeypatch, 3)  # the second micro-batch of step 1
    config = dataclasses.replace(CONFIG, optim=dataclasses.replace(CONFIG.optim, grad_accum=2, max_steps=12),
                                 eval_every=12)
    with pytest.raises(Diverged, match="loss became nan at step 1"):
        train(config, data, report=lambda m, c: pytest.fail("no report after a NaN"), checkpoint_dir=tmp_path)
    assert len(loaded) == 4  # stopped at the check after step 2, not at step 12


@pytest.mark.parametrize("value, message", [(0, "grad_accum must be >= 1, found 0"),
                                            (1.5, "optim.grad_accum: expected an integer"),
                                            ("2", "optim.grad_accum: expected an integer")])
def test_grad_accum_is_validated(value, message):
    from raydistill.errors import UserError

    with pytest.raises(UserError, match=message):
        TrainConfig.from_dict({"optim": {"grad_accum": value}})


def test_grad_accum_at_its_default_leaves_the_config_dict_as_it_was():
    """Left out at 1 (study cells, warm starts and cached teachers hash this dict); kept and
    read back otherwise."""
    assert "grad_accum" not in CONFIG.to_dict()["optim"]
    config = TrainConfig.from_dict({**CONFIG.to_dict(), "optim": {**CONFIG.to_dict()["optim"], "grad_accum": 4}})
    assert config.to_dict()["optim"]["grad_accum"] == 4 and TrainConfig.from_dict(config.to_dict()) == config

"""`raydistill plan` and the cache budget: figures checked against hand arithmetic, and the
choice between caching the teacher's features and running it live in the trials."""

import json
import sys
from pathlib import Path

import pytest

from raydistill.cli import main
from raydistill.errors import UserError
from raydistill.teacher.info import TeacherInfo
from raydistill.commands.cost import CorpusShape, choose_teacher_features, make_plan, storage_plan
from raydistill.prepare import parse_bytes
from raydistill.search.space import load_space

BASE = Path(__file__).resolve().parents[1] / "search_spaces" / "base"
HUBERT_BASE = TeacherInfo(12, 768, 500)
HOURS = 960
SECONDS = HOURS * 3600  # 3,456,000 s of LibriSpeech-960
FRAMES = 50 * SECONDS  # 172,800,000 frames at HuBERT's 20 ms stride
FEATURE_BYTES = FRAMES * 768 * 2  # one hidden state in float16: 265,420,800,000 B


@pytest.fixture(scope="module")
def dice_plan():
    return make_plan(load_space(BASE / "dice.yaml"), CorpusShape.from_hours(HOURS), trials=8, mode="cached")


def test_librispeech_960_with_hubert_base_matches_hand_arithmetic(dice_plan):
    plan = dice_plan
    assert plan["corpus"]["frames"] == FRAMES == 172_800_000
    assert plan["teacher"]["layers"] == 12 and plan["teacher"]["dim"] == 768
    items = {i["what"]: i["bytes"] for i in plan["cache"]["items"]}
    assert items["features of layer 9"] == FEATURE_BYTES == 265_420_800_000
    assert items["units of layer 9, K=500"] == FRAMES * 4 + 500 * 768 * 4 == 692_736_000
    assert items["units of layer 6, K=100"] == FRAMES * 4 + 100 * 768 * 4
    # the space searches soft labels (layers 6, 9, 12) and L_feat (every layer a student maps to: 1..12)
    assert [w for w in items if w.startswith("features")] == [f"features of layer {i}" for i in range(1, 13)]
    assert plan["cache"]["bytes"] == 12 * FEATURE_BYTES + sum(FRAMES * 4 + k * 768 * 4
                                                               for k in (100, 500) for _ in (6, 9, 12))
    # one pass of HuBERT-base over the audio: 2 FLOPs per MAC, in fp32; the A100's figures
    # (312 TFLOP/s bf16, 19.5 fp32) at 12 % MFU unless told otherwise
    gpu = plan["gpu"]
    assert (gpu["peak_tflops"], gpu["fp32_tflops"], gpu["mfu"]) == (312.0, 19.5, 0.12)
    (single,) = plan["teacher_passes"]
    assert 7.0e9 < plan["teacher"]["macs_per_second"] < 7.7e9  # HuBERT-base: 7.1-7.6 GMAC/s at 5-15.6 s
    assert single["flops"] == pytest.approx(2 * plan["teacher"]["macs_per_second"] * 3_456_000)
    assert 4.8e16 < single["flops"] < 5.4e16  # dice.yaml's "≈ 52 PFLOP"
    assert single["gpu_hours"] == pytest.approx(single["flops"] / (19.5e12 * 0.12) / 3600)
    # a trial: 3 x the student's forward over steps x batch seconds (x workers): dice.yaml's
    # 400k steps of 87.5 s; the narrow student (D/2, same CNN) costs more than a quarter of the
    # teacher and less than all of it
    (dice,) = plan["methods"]
    assert (dice["steps"], dice["batch_seconds"]) == (400_000, 87.5)
    assert plan["teacher"]["macs_per_second"] / 4 < dice["student_macs_per_second"] < plan["teacher"]["macs_per_second"]
    assert dice["train_flops"] == pytest.approx(6 * dice["student_macs_per_second"] * 400_000 * 87.5)
    # training runs in bf16 (autocast), the evaluation in fp32: each priced at its own peak
    assert dice["gpu_hours"] == pytest.approx(dice["train_flops"] / (312e12 * 0.12) / 3600
                                              + dice["eval_flops"] / (19.5e12 * 0.12) / 3600)


def test_a_live_teacher_costs_every_trial_a_teacher_forward_and_caches_only_units():
    space = load_space(BASE / "dice.yaml")
    plan = make_plan(space, CorpusShape.from_hours(HOURS), trials=8, mode="live")
    items = {i["what"]: i["bytes"] for i in plan["cache"]["items"]}
    assert not any(w.startswith("features") for w in items)
    assert items["k-means sample of layer 9"] == int(1.2 * 100_000) * 768 * 2
    # units of layers that are not cached take two passes: sample for k-means, then labels
    assert len(plan["teacher_passes"]) == 2 and "units of layer 9, K=500" in plan["teacher_passes"][1]["computes"]
    distil = make_plan(load_space(BASE / "distil.yaml"), CorpusShape.from_hours(HOURS), trials=1, mode="live")
    (m,) = distil["methods"]
    assert m["teacher_live_runs_per_step"] == 1 and distil["cache"]["bytes"] == 0 and not distil["teacher_passes"]
    assert m["read_bytes_per_step"] == 0  # live trials read no features from the cache
    audio = m["steps"] * m["batch_seconds"]
    assert m["train_flops"] == pytest.approx(6 * m["student_macs_per_second"] * audio
                                             + 2 * distil["teacher"]["macs_per_second"] * audio)


def test_gradient_accumulation_multiplies_a_steps_audio():
    space = load_space(BASE / "distil.yaml")
    shape = CorpusShape.from_hours(HOURS)
    (one,) = make_plan(space, shape, trials=1, mode="cached")["methods"]
    (four,) = make_plan(space.with_base({"optim": {"grad_accum": 4}}), shape, trials=1, mode="cached")["methods"]
    assert four["steps"] == one["steps"] and four["batch_seconds"] == 4 * one["batch_seconds"]
    assert four["train_flops"] == pytest.approx(4 * one["train_flops"])


def test_the_budget_decides_cached_or_live_or_refuses():
    space = load_space(BASE / "distil.yaml")
    needs = space.teacher_needs(HUBERT_BASE)
    assert needs.features  # cached, DistilHuBERT reads teacher layers
    full = len(needs.features) * FEATURE_BYTES
    big, small = full + 1, full - 1
    assert choose_teacher_features(space, HUBERT_BASE, FRAMES, mode="auto", budget=big, free=10 * big)[0] == "cached"
    choice, items, why = choose_teacher_features(space, HUBERT_BASE, FRAMES, mode="auto", budget=small, free=10 * big)
    assert choice == "live" and items == [] and "--cache-budget" in why
    # the free space limits too: an earlier search's bytes already on disk count as available
    assert choose_teacher_features(space, HUBERT_BASE, FRAMES, mode="auto", budget=None, free=small)[0] == "live"
    assert choose_teacher_features(space, HUBERT_BASE, FRAMES, mode="auto", budget=None, free=small,
                                   existing=2)[0] == "cached"
    with pytest.raises(UserError, match="--teacher-features live"):
        choose_teacher_features(space, HUBERT_BASE, FRAMES, mode="cached", budget=small, free=10 * big)
    dice = load_space(BASE / "dice.yaml")
    with pytest.raises(UserError, match="even the teacher's units"):
        choose_teacher_features(dice, HUBERT_BASE, FRAMES, mode="auto", budget=10**9, free=10 * big)


@pytest.mark.parametrize("text,value", [("500G", 500 * 10**9), ("1.5T", 1_500 * 10**9), ("800GB", 800 * 10**9),
                                        ("12345", 12345), ("2m", 2 * 10**6)])
def test_sizes(text, value):
    assert parse_bytes(text) == value


def test_error_lines_keeps_ours_and_drops_what_ray_forwards(error_lines):
    print("\x1b[33m(raylet)\x1b[0m [2026-12-03 14:24:03,840 E 1 2] (raylet) file_system_monitor.cc:116: "
          "/tmp/ray/session_x is over 95% full", file=sys.stderr)
    print("(TrainTrainable pid=4711) starting", file=sys.stderr)
    print("(raylet, ip=10.0.0.2) worker killed", file=sys.stderr)
    print("\x1b[36m(RayTrainWorker pid=12, ip=10.0.0.2)\x1b[0m step 3", file=sys.stderr)
    print("raydistill: error: --hours 0: must be > 0 (it was (raylet) once)", file=sys.stderr)
    assert error_lines() == ["raydistill: error: --hours 0: must be > 0 (it was (raylet) once)"]


def test_plan_command(capsys, error_lines, tmp_path):
    assert main(["plan", "--space", str(BASE / "all.yaml"), "--hours", "960", "--json", "--workdir",
                 str(tmp_path / "w"), "--teacher-features", "cached"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [m["method"] for m in plan["methods"]] == ["dicehubert", "kd", "star", "armhubert", "distilhubert"]
    assert plan["corpus"]["frames"] == FRAMES and not (tmp_path / "w").exists()  # nothing written
    assert main(["plan", "--space", str(BASE / "star.yaml"), "--hours", "960", "--cache-budget", "1T",
                 "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "trials read the teacher's features: live" in out and "GPU-h" in out
    for bad in (["--hours", "0"], ["--cache-budget", "lots"], ["--mfu", "2"], ["--trials", "0"]):
        assert main(["plan", "--space", str(BASE / "star.yaml"), *bad]) == 2
        err = error_lines()
        assert len(err) == 1 and err[0].startswith("raydistill: error: "), err


def test_search_over_budget_is_refused_before_anything_is_written(tiny_corpus, tmp_path, capsys):
    workdir = tmp_path / "w"
    code = main(["search", "--space", str(BASE.parent / "star.yaml"), "--corpus", str(tiny_corpus.root),
                 "--workdir", str(workdir), "--cache-budget", "1K", "--teacher-features", "cached", "--smoke"])
    err = capsys.readouterr().err
    assert code == 2 and "more than --cache-budget 1.0 KB" in err, err
    assert not workdir.exists()
    code = main(["search", "--space", str(BASE.parent / "star.yaml"), "--corpus", str(tiny_corpus.root),
                 "--workdir", str(workdir), "--cache-budget", "lots", "--smoke"])
    assert code == 2 and "--cache-budget 'lots'" in capsys.readouterr().err and not workdir.exists()


# ---------------------------------------------------------------------------------------------------
# What the trials read: the union of each configuration's own needs.

SPACES = sorted((BASE.parent).rglob("*.yaml"))
TINY_TEACHER = TeacherInfo(4, 192, 100)


@pytest.mark.parametrize("path", SPACES, ids=lambda p: str(p.relative_to(BASE.parent)))
def test_the_cache_holds_what_every_trial_of_a_space_reads(path):
    """Trials drawn as the search draws them (Optuna, define-by-run) read nothing the space's
    teacher pass leaves out: each method's own ``needs`` of the trial's config is in the union."""
    import optuna

    from raydistill.methods import teacher_needs

    info = HUBERT_BASE if path.parent == BASE else TINY_TEACHER
    space = load_space(path)
    union = space.teacher_needs(info)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(120):
        trial = study.ask()
        config = space.config(space.sample(trial))
        study.tell(trial, 0.0)
        own = teacher_needs(config, info)
        assert set(own.features) <= set(union.features), (config.method, own)
        assert set(own.units) <= set(union.units) and (union.logits or not own.logits), (config.method, own)
        assert union.live or not own.live, (config.method, own)


def test_distilhubert_caches_its_three_layers_and_a_terabyte_holds_them():
    space = load_space(BASE / "distil.yaml")
    assert space.teacher_needs(HUBERT_BASE).features == (4, 8, 12)  # the heads' layers, not all 13
    plan = make_plan(space, CorpusShape.from_hours(HOURS), trials=8, budget=parse_bytes("1T"), free=10**15)
    assert plan["teacher_features"]["choice"] == "cached"
    assert plan["cache"]["bytes"] == 3 * FEATURE_BYTES == 796_262_400_000
    assert plan["teacher_passes"][0]["computes"] == "layer 4, layer 8, layer 12"


def test_cache_reads_per_step_and_the_storage_warning():
    plan = make_plan(load_space(BASE / "distil.yaml"), CorpusShape.from_hours(HOURS), trials=8, mode="cached",
                     storage_gbps=100.0)
    (m,) = plan["methods"]
    # three float16 layers of 768 at 50 frames a second of the step's 295 s
    assert m["read_bytes_per_step"] == 3 * 768 * 2 * 50 * 295 == 67_968_000
    assert m["step_seconds"] == pytest.approx(m["train_flops"] / m["steps"] / (312e12 * 0.12))
    assert m["read_gbps"] == pytest.approx(m["read_bytes_per_step"] / m["step_seconds"] / 1e9)
    assert m["live_teacher_seconds_per_step"] == pytest.approx(
        2 * plan["teacher"]["macs_per_second"] * 295 / (312e12 * 0.12))
    storage = plan["storage"]
    assert storage["read_gbps_total"] == pytest.approx(8 * m["read_gbps"]) and not storage["warnings"]
    # 8 trials sharing 1 GB/s read a step's 68 MB in 0.54 s, longer than HuBERT-base takes on 295 s live
    (warning,) = storage_plan(plan["methods"], 1.0, 8)["warnings"]
    assert warning.startswith("distilhubert: reading a step's cached teacher outputs (68.0 MB) at 0.12 GB/s")
    assert m["read_seconds_per_step"] == pytest.approx(67_968_000 / (1e9 / 8))
    assert not storage_plan(plan["methods"], 1.0, 1)["warnings"]  # one trial alone reads it in 0.07 s


def test_plan_prints_bandwidth_and_the_markdown_table(capsys, tmp_path):
    assert main(["plan", "--space", str(BASE / "distil.yaml"), "--hours", "960", "--teacher-features", "cached",
                 "--workdir", str(tmp_path / "w"), "--storage-gbps", "1", "--concurrent", "8"]) in (0, None)
    out = capsys.readouterr().out
    assert "features of layer 12" in out and "features of layer 0 " not in out
    assert "68.0 MB" in out and "warning: distilhubert: reading a step's cached teacher outputs" in out
    assert main(["plan", "--space", str(BASE / "distil.yaml"), "--hours", "960", "--markdown",
                 "--workdir", str(tmp_path / "w")]) in (0, None)
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].startswith("| space (8 trials) |") and len(rows) == 3
    assert rows[2].startswith("| `base/distil.yaml` | 796.3 GB, 1 | 0 B, 0 | 23.5M, 200k × 295 s, 0/1, ")
    assert "| 68.0 MB, " in rows[2] and "(--memory)" in rows[2]


# ---------------------------------------------------------------------------------------------------
# The memory of a step, measured on the CPU (search/memory.py).

def test_live_tensors_counts_what_is_alive_and_its_peak():
    import torch

    from raydistill.search.memory import LiveTensors

    with LiveTensors() as tracker:
        a = torch.ones(1000, 250)  # 1 MB
        b = a @ a.T  # 4 MB
        del b
        c = a + 1  # 1 MB
    assert (tracker.current, tracker.peak) == (2_000_000, 5_000_000)
    del a, c


@pytest.mark.slow
def test_a_steps_memory_is_the_line_through_two_and_three_crops():
    """The figure extends each operation's bytes at 2 and 3 crops to the space's batch: a step run
    at 5 crops peaks there exactly, and what does not grow with the batch holds at least the
    weights and AdamW's two moments."""
    from raydistill.methods import get_method
    from raydistill.search.memory import step_bytes

    config = load_space(BASE / "dice.yaml", smoke=True).base_config()
    two, three, five = (step_bytes(config, HUBERT_BASE, n, 1.0, bf16=False) for n in (2, 3, 5))
    assert len(two) == len(three) == len(five)
    assert max(five) == max(a + 3 * (b - a) for a, b in zip(two, three))
    params = sum(p.numel() for p in get_method("dicehubert").build(config, HUBERT_BASE).parameters())
    assert min(a - 2 * (b - a) for a, b in zip(two, three)) >= 3 * 4 * params


@pytest.mark.slow
def test_plan_memory_is_checked_against_the_gpu(capsys, tmp_path):
    assert main(["plan", "--space", str(BASE / "dice.yaml"), "--smoke", "--hours", "1", "--memory",
                 "--gpu-memory", "100M", "--workdir", str(tmp_path / "w")]) in (0, None)
    out = capsys.readouterr().out
    assert "GPU memory per worker: a step's peak of tensors, measured on the CPU" in out
    assert "warning: dicehubert: a step takes" in out and "90% of --gpu-memory 100.0 MB" in out
    assert "(fp32, 2 crops of 4 s)" in out or "(bf16, 2 crops of 4 s)" in out  # 8 s of 4 s crops

"""Does `raydistill convert --to s3prl` load in s3prl itself, with raydistill's hidden states?

Two halves, run by bench/s3prl_check.sh in two environments:

* ``export WORK`` (raydistill's environment): builds one student of each kind the export covers
  (weights perturbed off their init, so a missed copy shows), saves it as a checkpoint, converts
  it, and saves raydistill's hidden states on a fixed padded batch of two waveforms as .npy.
* ``check WORK`` (an environment where s3prl imports: no raydistill there): loads each export
  through s3prl's own ``S3PRLUpstream`` (the hub entry registered as docs/export.md says) and
  through the ``s3prl.upstream.<name>`` layout of a copy into s3prl; prints one JSON summary
  with the max |diff| of every hidden state over the valid frames. Exit 1 beyond 1e-4.
"""

from __future__ import annotations

import importlib
import importlib.abc
import json
import sys
import time
from pathlib import Path

import numpy as np

SECONDS = (2.0, 1.3)  # the batch: two waveforms, the second padded
TOLERANCE = 1e-4
NO_DROPOUT = dict(dropout_input=0.0, attention_dropout=0.0, dropout=0.0, layer_drop=0.0)
TINY = {"conv_layers": [[32, 10, 5]] + [[32, 3, 2]] * 4 + [[32, 2, 2]] * 2, "embed_dim": 32, "ffn_dim": 64,
        "num_layers": 2, "num_heads": 2, "pos_conv_kernel": 16, **NO_DROPOUT}
LSTM_TINY = {"arch": "lstm", "conv_layers": TINY["conv_layers"], "hidden": 16, "num_layers": 2}
# name -> (method, student); the two "released" ones are the papers' sizes
STUDENTS = {
    "post_ln": ("dicehubert", TINY),
    "pre_ln": ("dicehubert", {**TINY, "layer_norm_first": True, "extractor_mode": "layer_norm", "conv_bias": True}),
    "no_projection": ("star", {**TINY, "project_features": False}),
    "armhubert_released": ("armhubert", {"preset": "armhubert", **NO_DROPOUT}),
    "reuse_reference_code": ("armhubert", {**TINY, "reuse_pattern": "2by1", "reuse_mode": "reference_code"}),
    "lstm_released": ("kd", {"arch": "lstm"}),  # 4 x BiLSTM-384 on the 512-channel CNN
    "lstm_input_state": ("kd", {**LSTM_TINY, "input_proj": 32}),
}


def waves():
    rng = np.random.default_rng(0)
    return [(0.1 * rng.standard_normal(int(16000 * s))).astype(np.float32) for s in SECONDS]


def export(work: Path) -> None:
    import torch

    from raydistill.config import TrainConfig
    from raydistill.convert import convert
    from raydistill.evaluate.upstream import HubertUpstream
    from raydistill.methods import TeacherInfo, get_method
    from raydistill.models.checkpoint import save_student

    teacher = TeacherInfo(num_layers=12, embed_dim=768, num_classes=500)
    batch = [torch.from_numpy(w) for w in waves()]
    padded = torch.nn.utils.rnn.pad_sequence(batch, batch_first=True)
    lengths = torch.tensor([len(w) for w in batch])
    for name, (method, student) in STUDENTS.items():
        config = TrainConfig.from_dict({"method": method, "student": student,
                                        "targets": {"teacher_layer": 12, "num_clusters": 500}})
        torch.manual_seed(0)
        module = get_method(method).build(config, teacher)
        for p in module.parameters():
            p.data.add_(0.05 * torch.randn_like(p))
        (work / "checkpoints").mkdir(parents=True, exist_ok=True)
        checkpoint = work / "checkpoints" / f"{name}.pt"
        save_student(checkpoint, config, module, {"spec": "bench", "num_layers": 12, "embed_dim": 768,
                                                   "num_classes": 500}, masks_input=get_method(method).masks(config))
        convert(checkpoint, work / "exports" / name, "s3prl", force=True)
        with torch.no_grad():
            states, frames = HubertUpstream(module.model.eval()).hidden_states(padded, lengths)
        ref = work / "reference" / name
        ref.mkdir(parents=True, exist_ok=True)
        for k, s in enumerate(states):
            np.save(ref / f"state{k}.npy", s.numpy())
        np.save(ref / "frames.npy", frames.numpy())
        print(f"exported {name}: {len(states)} states of {states[0].shape[-1]}", file=sys.stderr)


def max_diff(all_hs, ref: Path) -> float:
    frames = np.load(ref / "frames.npy")
    want = sorted(ref.glob("state*.npy"), key=lambda p: int(p.stem[5:]))
    if len(want) != len(all_hs):
        raise AssertionError(f"{ref.name}: s3prl gives {len(all_hs)} hidden states, raydistill {len(want)}")
    worst = 0.0
    for got, path in zip(all_hs, want):
        w = np.load(path)
        for row, n in enumerate(frames):
            worst = max(worst, float(np.abs(got[row, :n].numpy() - w[row, :n]).max()))
    return worst


class RefuseRaydistill(importlib.abc.MetaPathFinder):
    """Makes ``import raydistill`` fail, wherever it is installed: the export must not need it."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "raydistill":
            raise ImportError(f"{name}: the s3prl export must not import raydistill")


def check(work: Path) -> int:
    import torch

    sys.meta_path.insert(0, RefuseRaydistill())
    started = time.time()
    import s3prl
    import s3prl.hub
    import s3prl.upstream
    import torchaudio
    from s3prl.nn import S3PRLUpstream

    import_s = time.time() - started
    batch = [torch.from_numpy(w) for w in waves()]
    padded = torch.nn.utils.rnn.pad_sequence(batch, batch_first=True)
    lengths = torch.tensor([len(w) for w in batch])
    exports = work / "exports"
    sys.path.insert(0, str(exports))  # each export is a package: <name>.hubconf
    s3prl.upstream.__path__.append(str(exports))  # as if copied to s3prl/upstream/<name>/
    results = {}
    for name in STUDENTS:
        # 1. S3PRLUpstream on the hub entry registered at run time (docs/export.md)
        hubconf = importlib.import_module(f"{name}.hubconf")
        s3prl.hub.raydistill_student = hubconf.raydistill_student
        upstream = S3PRLUpstream("raydistill_student", path_or_url=str(exports / name)).eval()
        with torch.no_grad():
            all_hs, all_lens = upstream(padded, lengths)
        # 2. the folder inside s3prl's package, its entry called as run_downstream.py's runner does
        inside = importlib.import_module(f"s3prl.upstream.{name}.hubconf")
        expert = inside.raydistill_student(ckpt=str(exports / name / "model.pt"), model_config=None, refresh=False)
        with torch.no_grad():
            direct = expert.eval()(list(batch))["hidden_states"]
        results[name] = {"states": len(all_hs), "dim": all_hs[0].shape[-1],
                         "downsample_rates": sorted(set(upstream.downsample_rates)),
                         "max_abs_diff_S3PRLUpstream": max_diff(all_hs, work / "reference" / name),
                         "max_abs_diff_s3prl_upstream_layout": max_diff(direct, work / "reference" / name)}
    worst = max(max(r["max_abs_diff_S3PRLUpstream"], r["max_abs_diff_s3prl_upstream_layout"])
                for r in results.values())
    ok = worst <= TOLERANCE
    print(json.dumps({"ok": ok, "max_abs_diff": worst, "tolerance": TOLERANCE,
                      "versions": {"python": sys.version.split()[0], "s3prl": s3prl.__version__,
                                   "torch": torch.__version__, "torchaudio": torchaudio.__version__},
                      "s3prl_import_s": round(import_s, 1), "check_s": round(time.time() - started, 1),
                      "students": results}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("export", "check"):
        sys.exit("usage: s3prl_check.py export|check WORK")
    if sys.argv[1] == "export":
        export(Path(sys.argv[2]))
    else:
        sys.exit(check(Path(sys.argv[2])))

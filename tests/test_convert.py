"""Students leave raydistill as an s3prl upstream and as a Hugging Face HubertModel, with the same
hidden states as inside raydistill."""

import os
import subprocess
import sys

import pytest
import torch

from needs import need_module
from raydistill.cli import main
from raydistill.config import TrainConfig
import raydistill.convert as convert_module
from raydistill.convert import convert
from raydistill.errors import UserError
from raydistill.methods import get_method
from raydistill.teacher.info import TeacherInfo
from raydistill.models.checkpoint import save_student
from raydistill.evaluate.upstream import HubertUpstream
from raydistill.models.config import hubert_conv

NO_DROPOUT = dict(dropout_input=0.0, attention_dropout=0.0, dropout=0.0, layer_drop=0.0)
SMALL = {"conv_layers": [list(c) for c in hubert_conv(32)], "embed_dim": 32, "ffn_dim": 64, "num_layers": 2,
         "num_heads": 2, "pos_conv_kernel": 16, **NO_DROPOUT}
TEACHER = TeacherInfo(num_layers=2, embed_dim=64, num_classes=12)


def student(tmp_path, method="dicehubert", **student_options):
    return student_of(tmp_path, method, student_options)


def waves():
    torch.manual_seed(1)
    return [0.1 * torch.randn(16000), 0.1 * torch.randn(11000)]


@torch.no_grad()
def reference_states(model, wave):
    states, _ = HubertUpstream(model).hidden_states(wave[None], torch.tensor([len(wave)]))
    return states


# every student the s3prl export covers: HuBERT-shaped (post-/pre-LN, with and without feature
# projection, ARMHuBERT's attention-map reuse in both modes) and the BiLSTM of KD (its LSTM input
# a hidden state or not)
S3PRL_STUDENTS = {
    "post-ln": ("dicehubert", {}),
    "pre-ln": ("dicehubert", {"layer_norm_first": True, "extractor_mode": "layer_norm", "conv_bias": True}),
    "no-projection": ("star", {"project_features": False}),
    "reuse-paper": ("armhubert", {"reuse_pattern": "2by1"}),
    "reuse-reference-code": ("armhubert", {"reuse_pattern": [True, False], "reuse_mode": "reference_code"}),
    "lstm": ("kd", {"arch": "lstm", "conv_layers": SMALL["conv_layers"], "hidden": 16, "num_layers": 2}),
    "lstm-input-state": ("kd", {"arch": "lstm", "conv_layers": SMALL["conv_layers"], "hidden": 16, "num_layers": 2,
                                "input_proj": 32}),
}

# Runs in a fresh interpreter (-I: no PYTHONPATH, no script dir on sys.path) from an empty
# directory, with raydistill and torchaudio made unimportable: an exported expert.py that needs
# either fails here. Loads each export as s3prl's hub does (its hubconf's entry) and saves the
# hidden states of a padded batch.
RUN_EXPERTS = """
import importlib, importlib.abc, sys, torch

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("raydistill", "torchaudio"):
            raise ImportError(f"{name} must not be imported by the s3prl export")

sys.meta_path.insert(0, Refuse())
root, names = sys.argv[1], sys.argv[2:]
sys.path.insert(0, root)
wavs = torch.load(root + "/wavs.pt")
for name in names:
    hubconf = importlib.import_module(name + ".hubconf")
    expert = hubconf.raydistill_student()  # default ckpt: its own folder
    with torch.no_grad():
        out = expert(wavs)
    torch.save({"states": out["hidden_states"], "last": out["last_hidden_state"],
                "rate": expert.get_downsample_rates("hidden_states"),
                "via_weights_file": hubconf.raydistill_student(ckpt=root + "/" + name + "/model.pt", refresh=False)(
                    wavs)["hidden_states"],  # as S3PRLUpstream calls it
                "modules": sorted(m for m in sys.modules if m.split(".")[0] in ("raydistill", "torchaudio"))},
               root + "/" + name + ".out.pt")
"""


def student_of(tmp_path, method, options):
    if options.get("arch") == "lstm":
        config = TrainConfig.from_dict({"method": method, "student": options})
    else:
        config = TrainConfig.from_dict({"method": method, "student": {**SMALL, **options},
                                        "targets": {"teacher_layer": 2, "num_clusters": 8}})
    torch.manual_seed(0)
    module = get_method(method).build(config, TEACHER)
    for p in module.parameters():  # weights off their init values, so a missed copy shows
        p.data.add_(0.05 * torch.randn_like(p))
    path = tmp_path / "student.pt"
    save_student(path, config, module, {"spec": "test", "num_layers": 2, "embed_dim": 64, "num_classes": 12},
                 masks_input=get_method(method).masks(config))
    return path, module.model.eval()


def test_s3prl_export_runs_without_raydistill_or_torchaudio(tmp_path):
    root = tmp_path / "exports"
    root.mkdir()
    batch = waves()
    torch.save(batch, root / "wavs.pt")
    models = {}
    for name, (method, options) in S3PRL_STUDENTS.items():
        package = name.replace("-", "_")
        (tmp_path / name).mkdir()
        path, models[package] = student_of(tmp_path / name, method, options)
        out = convert(path, root / package, "s3prl")
        assert {p.name for p in out.iterdir()} == {"expert.py", "hubconf.py", "__init__.py", "config.json", "model.pt"}
    empty = tmp_path / "empty"
    empty.mkdir()
    subprocess.run([sys.executable, "-I", "-c", RUN_EXPERTS, str(root), *models], cwd=empty, check=True,
                   env={"PATH": os.environ.get("PATH", "")}, timeout=300)
    for package, model in models.items():
        result = torch.load(root / f"{package}.out.pt")
        assert result["modules"] == [], package  # neither raydistill nor torchaudio was loaded
        assert result["rate"] == 320  # 20 ms at 16 kHz
        states = result["states"]
        assert len(states) == model.num_states and torch.equal(result["last"], states[-1])
        assert states[0].shape[:2] == (2, model.frames(16000))
        for got, again in zip(states, result["via_weights_file"]):
            assert torch.equal(got, again)
        # the padded batch is what raydistill computes on it, over each row's valid frames
        lengths = torch.tensor([len(w) for w in batch])
        want, frames = HubertUpstream(model).hidden_states(torch.nn.utils.rnn.pad_sequence(batch, batch_first=True),
                                                           lengths)
        for g, w in zip(states, want):
            for k, n in enumerate(frames.tolist()):
                torch.testing.assert_close(g[k, :n], w[k, :n], atol=1e-5, rtol=1e-4)
        if "reference_code" not in package:  # (that reuse mixes a batch's rows, as ARMHuBERT's code did)
            for k, wave in enumerate(batch):  # and each row, alone, is what raydistill computes for it
                for g, w in zip(states, reference_states(model, wave)):
                    torch.testing.assert_close(g[k, : model.frames(len(wave))], w[0], atol=1e-5, rtol=1e-4)


def test_s3prl_export_checks_itself(tmp_path, monkeypatch):
    """convert runs the written expert against raydistill and writes nothing if they differ."""
    path, _ = student(tmp_path)
    real = convert_module.s3prl_state

    def off_by_a_bit(model):
        state = real(model)
        state["layers.1.final_layer_norm.bias"] += 0.01
        return state

    monkeypatch.setattr(convert_module, "s3prl_state", off_by_a_bit)
    with pytest.raises(RuntimeError, match="differ from raydistill's"):
        convert(path, tmp_path / "up", "s3prl")
    assert not (tmp_path / "up").exists()


@pytest.mark.parametrize("options", [{}, {"layer_norm_first": True, "extractor_mode": "layer_norm"},
                                     {"conv_layers": [list(c) for c in hubert_conv(32)], "project_features": False}])
def test_huggingface_export_has_raydistill_hidden_states(tmp_path, options):
    transformers = need_module("transformers")
    path, model = student(tmp_path, **options)
    out = convert(path, tmp_path / "hf", "hf")
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    hf = transformers.HubertModel.from_pretrained(str(out), local_files_only=True).eval()
    assert hf.config.num_hidden_layers == 2 and hf.config.hidden_size == 32
    torch.testing.assert_close(hf.masked_spec_embed.detach(), model.mask_emb.detach())
    for wave in waves():
        with torch.no_grad():
            out = hf(wave[None], output_hidden_states=True)
        # pre-LN: the final LayerNorm is in last_hidden_state (transformers 5 leaves it out of
        # hidden_states[-1]); post-LN: the two are the same tensor
        got = (*out.hidden_states[:-1], out.last_hidden_state)
        want = reference_states(model, wave)
        assert len(got) == len(want) == 3
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-4)


def test_huggingface_export_refuses_what_hubert_model_cannot_hold(tmp_path):
    path, _ = student(tmp_path, method="armhubert", reuse_pattern="2by1")
    with pytest.raises(UserError, match="attention-map reuse"):
        convert(path, tmp_path / "hf", "hf")
    assert not (tmp_path / "hf").exists()  # nothing half-written


def test_convert_cli(tmp_path, capsys):
    path, _ = student(tmp_path)
    assert main(["convert", "--checkpoint", str(path), "--to", "s3prl", "--out", str(tmp_path / "up")]) == 0
    assert (tmp_path / "up" / "expert.py").is_file()
    # an existing --out is refused (exit 2, one line) unless --force
    assert main(["convert", "--checkpoint", str(path), "--to", "s3prl", "--out", str(tmp_path / "up")]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["convert", "--checkpoint", str(path), "--to", "s3prl", "--out", str(tmp_path / "up"),
                 "--force"]) == 0
    assert main(["convert", "--checkpoint", str(tmp_path / "missing.pt"), "--to", "hf",
                 "--out", str(tmp_path / "x")]) == 2

"""Students leave raydistill as an s3prl upstream and as a Hugging Face HubertModel, with the same
hidden states as inside raydistill."""

import importlib
import sys

import pytest
import torch

from needs import need_module
from raydistill.cli import main
from raydistill.config import TrainConfig
from raydistill.convert import convert
from raydistill.errors import UserError
from raydistill.methods import TeacherInfo, get_method
from raydistill.models.checkpoint import save_student
from raydistill.evaluate.upstream import HubertUpstream
from raydistill.models.config import hubert_conv

NO_DROPOUT = dict(dropout_input=0.0, attention_dropout=0.0, dropout=0.0, layer_drop=0.0)
SMALL = {"conv_layers": [list(c) for c in hubert_conv(32)], "embed_dim": 32, "ffn_dim": 64, "num_layers": 2,
         "num_heads": 2, "pos_conv_kernel": 16, **NO_DROPOUT}
TEACHER = TeacherInfo(num_layers=2, embed_dim=64, num_classes=12)


def student(tmp_path, method="dicehubert", **student_options):
    config = TrainConfig.from_dict({"method": method, "student": {**SMALL, **student_options},
                                    "targets": {"teacher_layer": 2, "num_clusters": 8}})
    torch.manual_seed(0)
    module = get_method(method).build(config, TEACHER)
    for p in module.parameters():  # weights off their init values, so a missed copy shows
        p.data.add_(0.05 * torch.randn_like(p))
    path = tmp_path / "student.pt"
    save_student(path, config, module, {"spec": "test", "num_layers": 2, "embed_dim": 64, "num_classes": 12},
                 masks_input=get_method(method).masks(config))
    return path, module.model.eval()


def waves():
    torch.manual_seed(1)
    return [0.1 * torch.randn(16000), 0.1 * torch.randn(11000)]


@torch.no_grad()
def reference_states(model, wave):
    states, _ = HubertUpstream(model).hidden_states(wave[None], torch.tensor([len(wave)]))
    return states


def test_s3prl_expert_runs_a_batch_without_s3prl(tmp_path, monkeypatch):
    path, model = student(tmp_path)
    out = convert(path, tmp_path / "raydistill_s3prl", "s3prl")
    assert {p.name for p in out.iterdir()} == {"expert.py", "hubconf.py", "student.pt", "__init__.py"}
    monkeypatch.syspath_prepend(str(tmp_path))
    hubconf = importlib.import_module("raydistill_s3prl.hubconf")
    try:
        expert = hubconf.raydistill_student()  # default ckpt: the student.pt beside it
        assert expert.get_downsample_rates("hidden_states") == 320  # 20 ms at 16 kHz
        batch = waves()
        with torch.no_grad():
            result = expert(batch)
        states = result["hidden_states"]
        assert len(states) == model.num_states and torch.equal(result["last_hidden_state"], states[-1])
        assert states[0].shape == (2, model.frames(16000), 32)
        for k, wave in enumerate(batch):  # each row, alone, is what raydistill computes
            frames = model.frames(len(wave))
            for got, want in zip(states, reference_states(model, wave)):
                torch.testing.assert_close(got[k, :frames], want[0], atol=1e-5, rtol=1e-4)
    finally:
        for name in [m for m in sys.modules if m.startswith("raydistill_s3prl")]:
            del sys.modules[name]


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

"""Take a distilled student to the real benchmark and to deployment.

* :func:`to_s3prl`: a self-contained s3prl upstream folder: ``expert.py`` (``UpstreamExpert``,
  the student written out in plain PyTorch: a copy of
  :mod:`raydistill.export_templates.s3prl_expert`, which imports neither raydistill nor
  torchaudio), ``config.json`` (the architecture), ``model.pt`` (the weights, a plain state dict),
  ``hubconf.py`` (the ``raydistill_student`` entry) and ``__init__.py``. It loads wherever s3prl
  runs (docs/export.md). The expert returns every hidden state (the Transformer input, then each
  layer's output, as raydistill's evaluation uses them) at a 20 ms stride; every export is run
  against raydistill's model before it is kept (:func:`check_s3prl`).
* :func:`to_huggingface`: a ``transformers.HubertModel`` directory (``config.json`` +
  ``model.safetensors``) for HuBERT-shaped students whose every layer has its own attention
  (DiceHuBERT narrow/shallow, DistilHuBERT, STaR, MaskHuBERT without reuse). Its
  ``output_hidden_states`` equal raydistill's hidden states for the same audio, except that
  for pre-LN students raydistill's last state (after the final LayerNorm) is HF's
  ``last_hidden_state`` (transformers 5 puts the un-normalised last layer output in
  ``hidden_states[-1]``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from raydistill.errors import UserError
from raydistill.evaluate.upstream import HubertUpstream
from raydistill.export_templates import s3prl_expert
from raydistill.methods import load_student
from raydistill.models.checkpoint import save_torch
from raydistill.models.config import HubertConfig
from raydistill.models.hf import to_hf_model
from raydistill.models.lstm import LstmConfig, LstmModel
from raydistill.utils import atomic_dir

FORMATS = ("s3prl", "hf")

HUBCONF = '''"""s3prl hub entry for a raydistill student (written by `raydistill convert --to s3prl`)."""

import os

from .expert import UpstreamExpert as _UpstreamExpert


def raydistill_student(ckpt=None, *args, **kwargs):
    """A raydistill student; ``ckpt`` (the folder or its model.pt) defaults to this folder."""
    return _UpstreamExpert(ckpt or os.path.dirname(os.path.abspath(__file__)), *args, **kwargs)
'''


def convert(checkpoint: Path, out: Path, fmt: str, *, force: bool = False) -> Path:
    """Write ``checkpoint`` in format ``fmt`` (one of :data:`FORMATS`) to the new directory ``out``.

    ``out`` is written whole or not at all (built beside it, then renamed); an existing ``out``
    is an error unless ``force``.
    """
    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if out.exists() and not force:
        raise UserError(f"{out} exists: choose another --out or pass --force")
    config, module, _ = load_student(checkpoint)
    with atomic_dir(out, replace=force) as tmp:
        if fmt == "s3prl":
            to_s3prl(config, module.model, tmp)
        else:
            to_huggingface(config, module.model, tmp)
    return out


def to_s3prl(config, model, out: Path) -> None:
    """Write ``model`` (a HuBERT or BiLSTM student) as a self-contained s3prl upstream folder and
    check that it reproduces raydistill's hidden states."""
    out.mkdir(parents=True, exist_ok=True)
    (out / s3prl_expert.CONFIG_FILE).write_text(json.dumps(s3prl_config(config.student), indent=1) + "\n")
    save_torch(s3prl_state(model), out / s3prl_expert.WEIGHTS_FILE)
    shutil.copyfile(s3prl_expert.__file__, out / "expert.py")
    (out / "hubconf.py").write_text(HUBCONF)
    (out / "__init__.py").write_text("")
    check_s3prl(model, out)


def s3prl_config(cfg) -> dict:
    """The architecture as ``expert.py`` reads it (``config.json``)."""
    common = {"stride": cfg.stride, "conv_layers": [list(c) for c in cfg.conv_layers],
              "extractor_mode": cfg.extractor_mode, "conv_bias": cfg.conv_bias, "num_layers": cfg.num_layers}
    if isinstance(cfg, LstmConfig):
        return {"kind": "lstm", **common, "input_proj": cfg.input_proj, "hidden": cfg.hidden}
    return {"kind": "hubert", **common, "embed_dim": cfg.embed_dim, "num_heads": cfg.num_heads,
            "ffn_dim": cfg.ffn_dim, "pos_conv_kernel": cfg.pos_conv_kernel, "pos_conv_groups": cfg.pos_conv_groups,
            "layer_norm_first": cfg.layer_norm_first, "project_features": cfg.project_features,
            "computes_attention": list(cfg.computes_attention), "reuse_mode": cfg.reuse_mode}


# raydistill state-dict prefix -> expert.py's, per student kind; the mask embedding (training
# only) stays behind and the positional conv's weight norm is folded into a plain weight
S3PRL_NAMES = {
    "hubert": (("encoder.feature_extractor.conv_layers.", "cnn."),
               ("encoder.encoder.feature_projection.layer_norm.", "feature_norm."),
               ("encoder.encoder.feature_projection.projection.", "projection."),
               ("encoder.encoder.transformer.pos_conv_embed.conv.bias", "pos_conv.bias"),
               ("encoder.encoder.transformer.layer_norm.", "layer_norm."),
               ("encoder.encoder.transformer.layers.", "layers.")),
    "lstm": (("feature_extractor.conv_layers.", "cnn."), ("layer_norm.", "layer_norm."),
             ("projection.", "projection."), ("lstms.", "lstms.")),
}
POS_CONV = "encoder.encoder.transformer.pos_conv_embed.conv.parametrizations.weight."


def s3prl_state(model) -> dict:
    """``model``'s weights under ``expert.py``'s names (a plain state dict of tensors)."""
    kind = "lstm" if isinstance(model, LstmModel) else "hubert"
    state = {}
    for key, value in model.state_dict().items():
        if key == "mask_emb" or key.startswith(POS_CONV):
            continue
        new = next((to + key[len(frm):] for frm, to in S3PRL_NAMES[kind] if key.startswith(frm)), None)
        if new is None:
            raise RuntimeError(f"the s3prl export does not know the student's weight {key} (a raydistill bug)")
        state[new] = value.detach().clone()
    if kind == "hubert":
        with torch.no_grad():
            state["pos_conv.weight"] = model.encoder.encoder.transformer.pos_conv_embed.conv.weight.detach().clone()
    return state


@torch.no_grad()
def check_s3prl(model, out: Path, atol: float = 1e-4) -> float:
    """Run the written expert and raydistill's model on the same padded batch: the max |diff| of
    their hidden states over valid frames, or a RuntimeError beyond ``atol`` × the states' scale.
    (The same batch, not row by row: ARMHuBERT's ``reference_code`` reuse mixes a batch's rows.)"""
    expert = s3prl_expert.UpstreamExpert(str(out))
    generator = torch.Generator().manual_seed(0)
    wavs = [0.1 * torch.randn(n, generator=generator) for n in (16000, 11000)]
    got = expert(wavs)["hidden_states"]
    lengths = torch.tensor([len(w) for w in wavs])
    want, frames = HubertUpstream(model).hidden_states(torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True), lengths)
    if len(got) != len(want):
        raise RuntimeError(f"the s3prl expert returns {len(got)} hidden states, raydistill {len(want)}")
    worst = 0.0
    for g, w in zip(got, want):
        for row, n in enumerate(frames.tolist()):
            diff = (g[row, :n] - w[row, :n]).abs().max().item()
            if not diff <= atol * max(1.0, w[row, :n].abs().max().item()):
                raise RuntimeError(f"the s3prl expert's hidden states differ from raydistill's by {diff:.3g} "
                                   "(a raydistill bug: please report it)")
            worst = max(worst, diff)
    return worst


def to_huggingface(config, model, out: Path) -> None:
    """Copy a HuBERT student's weights into a ``transformers.HubertModel`` and save it."""
    cfg = config.student
    if not isinstance(cfg, HubertConfig):
        raise UserError(f"the Hugging Face export needs a HuBERT-shaped student; method {config.method} "
                        f"trains a {type(cfg).__name__.replace('Config', '')} student")
    if cfg.reuses_attention:
        raise UserError("the Hugging Face export needs every layer to compute its attention: "
                        "HubertModel has no attention-map reuse (reuse_pattern)")
    to_hf_model(cfg, model).save_pretrained(str(out), safe_serialization=True)

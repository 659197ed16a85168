"""Take a distilled student to the real benchmark and to deployment.

* :func:`to_s3prl`: an s3prl upstream folder (``expert.py`` with ``UpstreamExpert``,
  ``hubconf.py`` with the ``raydistill_student`` entry, ``student.pt``). Copy it to
  ``s3prl/upstream/raydistill/`` and add ``from .upstream.raydistill.hubconf import *`` to
  ``s3prl/hub.py``; then ``run_downstream.py -u raydistill_student -k .../student.pt``. The
  expert returns every hidden state (the Transformer input, then each layer's output, as
  raydistill's evaluation uses them) at a 20 ms stride. It needs raydistill installed beside s3prl.
* :func:`to_huggingface`: a ``transformers.HubertModel`` directory (``config.json`` +
  ``model.safetensors``) for HuBERT-shaped students whose every layer has its own attention
  (DiceHuBERT narrow/shallow, DistilHuBERT, STaR, MaskHuBERT without reuse). Its
  ``output_hidden_states`` equal raydistill's hidden states for the same audio, except that
  for pre-LN students raydistill's last state (after the final LayerNorm) is HF's
  ``last_hidden_state`` (transformers 5 puts the un-normalised last layer output in
  ``hidden_states[-1]``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from raydistill.errors import UserError
from raydistill.methods import load_student
from raydistill.models.checkpoint import STUDENT_FILE
from raydistill.models.config import HubertConfig
from raydistill.utils import atomic_dir

FORMATS = ("s3prl", "hf")

EXPERT = '''"""s3prl upstream for a raydistill student (written by `raydistill convert --to s3prl`)."""

import torch
from torch.nn.utils.rnn import pad_sequence

from raydistill.methods import load_student
from raydistill.evaluate.upstream import HubertUpstream

STRIDE = {stride}  # samples per frame at 16 kHz: 20 ms


class UpstreamExpert(torch.nn.Module):
    def __init__(self, ckpt, model_config=None, **kwargs):
        super().__init__()
        _, module, _ = load_student(ckpt)
        self.upstream = HubertUpstream(module.model, name="raydistill").eval()

    def get_downsample_rates(self, key: str) -> int:
        return STRIDE

    def forward(self, wavs):
        """wavs: list of 1-D float tensors at 16 kHz -> {{"hidden_states": [B, T, D] per state}}."""
        lengths = torch.tensor([len(w) for w in wavs], device=wavs[0].device)
        states, _ = self.upstream.hidden_states(pad_sequence(wavs, batch_first=True), lengths)
        return {{"hidden_states": states, "last_hidden_state": states[-1]}}
'''

HUBCONF = '''"""s3prl hub entry for a raydistill student (written by `raydistill convert --to s3prl`)."""

import os

from .expert import UpstreamExpert as _UpstreamExpert


def raydistill_student(ckpt=None, *args, **kwargs):
    """A raydistill student; ``ckpt`` defaults to the student.pt beside this file."""
    ckpt = ckpt or os.path.join(os.path.dirname(os.path.abspath(__file__)), "student.pt")
    return _UpstreamExpert(ckpt, *args, **kwargs)
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
            to_s3prl(checkpoint, config, tmp)
        else:
            to_huggingface(config, module.model, tmp)
    return out


def to_s3prl(checkpoint: Path, config, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(checkpoint, out / STUDENT_FILE)
    (out / "expert.py").write_text(EXPERT.format(stride=config.student.stride))
    (out / "hubconf.py").write_text(HUBCONF)
    (out / "__init__.py").write_text("")


def hf_config_of(cfg: HubertConfig):
    """The ``transformers.HubertConfig`` of a raydistill :class:`HubertConfig` (the inverse of
    ``teacher.sources.hf_config``)."""
    try:
        import transformers
    except ImportError:
        raise UserError("the Hugging Face export needs transformers: pip install 'raydistill[hf]'") from None
    return transformers.HubertConfig(
        conv_dim=[c for c, _, _ in cfg.conv_layers],
        conv_kernel=[k for _, k, _ in cfg.conv_layers],
        conv_stride=[s for _, _, s in cfg.conv_layers],
        conv_bias=cfg.conv_bias,
        feat_extract_norm="group" if cfg.extractor_mode == "group_norm" else "layer",
        hidden_size=cfg.embed_dim,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.ffn_dim,
        hidden_act="gelu",
        num_conv_pos_embeddings=cfg.pos_conv_kernel,
        num_conv_pos_embedding_groups=cfg.pos_conv_groups,
        do_stable_layer_norm=cfg.layer_norm_first,
        feat_proj_layer_norm=True,
        feat_proj_dropout=cfg.dropout_input,
        hidden_dropout=cfg.dropout,
        attention_dropout=cfg.attention_dropout,
        activation_dropout=cfg.activation_dropout,
        layerdrop=cfg.layer_drop,
        layer_norm_eps=1e-5,
    )


def to_huggingface(config, model, out: Path) -> None:
    """Copy a HuBERT student's weights into a ``transformers.HubertModel`` and save it."""
    cfg = config.student
    if not isinstance(cfg, HubertConfig):
        raise UserError(f"the Hugging Face export needs a HuBERT-shaped student; method {config.method} "
                        f"trains a {type(cfg).__name__.replace('Config', '')} student")
    if cfg.reuses_attention:
        raise UserError("the Hugging Face export needs every layer to compute its attention: "
                        "HubertModel has no attention-map reuse (reuse_pattern)")
    import transformers

    hf = transformers.HubertModel(hf_config_of(cfg)).eval()
    ta = model.encoder  # torchaudio Wav2Vec2Model: the same module layout as HF's (torchaudio's importer)
    projection = ta.encoder.feature_projection.state_dict()
    if not cfg.project_features:  # fairseq style, no Linear: HF always has one, make it the identity
        projection["projection.weight"] = torch.eye(cfg.embed_dim)
        projection["projection.bias"] = torch.zeros(cfg.embed_dim)
    parts = ((hf.feature_extractor, ta.feature_extractor.state_dict()), (hf.feature_projection, projection),
             (hf.encoder, ta.encoder.transformer.state_dict()))
    for target, state in parts:
        missing, unexpected = target.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise UserError(f"cannot map the student onto HubertModel.{type(target).__name__}: "
                            f"missing {missing[:3]}, unexpected {unexpected[:3]}")
    with torch.no_grad():
        hf.masked_spec_embed.copy_(model.mask_emb)
    hf.save_pretrained(str(out), safe_serialization=True)

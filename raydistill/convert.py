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

from raydistill.errors import UserError
from raydistill.methods import load_student
from raydistill.models.checkpoint import STUDENT_FILE
from raydistill.models.config import HubertConfig
from raydistill.models.hf import to_hf_model
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
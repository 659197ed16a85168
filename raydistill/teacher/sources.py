"""Load a frozen HuBERT teacher from a file, whatever wrote it.

Teacher specs (``--teacher``):

* ``embedded`` — the small HuBERT raydistill pretrains on the corpus (resolved by
  :mod:`raydistill.prepare` into a ``raydistill:`` checkpoint);
* ``raydistill:PATH`` — a raydistill checkpoint (the embedded teacher, or any student);
* ``torchaudio:PATH`` — a state dict in torchaudio's ``hubert_base``/``hubert_large``
  layout (``Wav2Vec2Model`` keys), or ``hubert_pretrain_*`` layout (``wav2vec2.*`` keys,
  which also carries the pre-training head); the architecture is recognised from the
  shapes, or named with ``torchaudio:PATH#hubert-large``;
* ``hf:DIR`` — a Hugging Face ``HubertModel`` directory (needs ``transformers``).

Any file spec may end with ``?mask_emb=FILE``: the teacher's mask embedding (what replaces
masked frames) from a torch file holding a [D] tensor, or a state dict with one
``mask_generator.mask_embedding``, ``masked_spec_embed`` or ``mask_emb`` entry. Masking
distillation (``armhubert`` with ``arm.masking``) runs the teacher on masked input, so it needs
a trained embedding; :attr:`Teacher.mask_embedding` says whether the teacher has one. Files
with one: a ``hubert_pretrain_*`` state dict, a Hugging Face checkpoint that holds
``masked_spec_embed``, a raydistill checkpoint of a method that masks its input (the embedded
teacher, DiceHuBERT, ARMHuBERT with masking). Files without: torchaudio's ``hubert_base`` /
``hubert_large`` encoder state dicts, and students of methods that never mask (their
``mask_emb`` stays at its random initialisation).

Likewise ``?head=FILE`` gives a teacher without one its HuBERT pre-training head (what logit
distillation, ``kd``, reads): a state dict with ``final_proj.weight``, ``final_proj.bias`` and the
unit embeddings (``label_embs``, ``label_embs_concat`` or ``label_embeddings``, bare or under a
prefix such as torchaudio's ``logit_generator.``), e.g. the entries of fairseq's HuBERT
checkpoint saved with ``torch.save``. Hugging Face's ``HubertModel`` and torchaudio's
``hubert_base`` hold none. Both options may be given, joined by ``&``:
``hf:DIR?mask_emb=E.pt&head=H.pt``. The head changes the logits, so it is part of the teacher's key.

A missing or mismatched file is a :class:`UserError` that names the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import Tensor

from raydistill.config import PRETRAIN, TrainConfig
from raydistill.errors import UserError
from raydistill.models.checkpoint import load_torch_file, load_weights, read_checkpoint
from raydistill.models.components import legacy_keys
from raydistill.models.config import ARCHITECTURES, HubertConfig
from raydistill.models.heads import PredictionHead
from raydistill.models.hf import from_hf_model
from raydistill.models.hubert import HubertModel
from raydistill.teacher.info import TeacherInfo
from raydistill.utils import file_hash, one_line, stable_hash

KINDS = ("embedded", "raydistill", "torchaudio", "hf")
LOGITS = -1  # pseudo-layer: the teacher's pre-training head logits (cos/0.1 over its C units)
OPTIONS = ("mask_emb", "head")  # ?NAME=FILE after a file spec: the mask embedding, the pre-training head
# keys a state dict may hold the mask embedding under (torchaudio pre-training, Hugging Face, raydistill)
MASK_EMB_KEYS = ("mask_generator.mask_embedding", "masked_spec_embed", "mask_emb")


@dataclass
class Teacher:
    """A frozen HuBERT (eval mode, no gradients) and where it came from."""

    model: HubertModel
    spec: str
    key: str  # content hash: names the caches built from this teacher
    head: Optional[PredictionHead] = None  # pre-training head, when the file has one
    source: str = ""  # a spec that loads this teacher anywhere (trials); default: ``spec``
    mask_embedding: bool = False  # whether ``model.mask_emb`` was trained (loaded from a file), not random

    def __post_init__(self):
        self.model.eval().requires_grad_(False)
        if self.head is not None:
            self.head.eval().requires_grad_(False)
        self.source = self.source or self.spec

    @property
    def num_layers(self) -> int:
        return self.model.cfg.num_layers

    def to(self, device) -> "Teacher":
        self.model.to(device)
        if self.head is not None:
            self.head.to(device)
        return self

    def frames(self, num_samples: int) -> int:
        return self.model.frames(num_samples)

    def dim(self, layer: int) -> int:
        """Width of hidden state ``layer`` (``LOGITS``: the pre-training head's units)."""
        return self.num_classes if layer == LOGITS else self.model.cfg.embed_dim

    @torch.inference_mode()
    def layer_features(self, wave: Tensor, lengths: Tensor, layers: Sequence[int]) -> tuple[dict[int, Tensor], Tensor]:
        """``layers`` are hidden-state indices; ``LOGITS`` (-1) asks for the pre-training head's logits."""
        out = self.model(wave, lengths)
        frame_lengths = out.lengths if out.lengths is not None else torch.full((wave.shape[0],), out.states[0].shape[1])
        feats = {layer: out.states[layer] for layer in layers if layer != LOGITS}
        if LOGITS in layers:
            feats[LOGITS] = self.logits(out.states[-1])
        return feats, frame_lengths

    def logits(self, last: Tensor) -> Tensor:
        """Pre-training logits [..., C] of last-layer states [..., D] (cos/0.1, fairseq ``compute_nce``)."""
        if self.head is None:
            raise UserError(f"teacher {self.spec} has no pre-training head: logit distillation (kd) "
                            "needs a checkpoint with final_proj and label embeddings")
        return self.head(last)

    @property
    def num_classes(self) -> int:
        return self.head.num_classes if self.head is not None else 0

    @property
    def info(self) -> TeacherInfo:
        """The teacher's shape, as its description gives it."""
        return TeacherInfo.of(self.describe())

    def describe(self) -> dict:
        cfg = self.model.cfg
        return {"spec": self.spec, "key": self.key, "source": self.source, "num_layers": cfg.num_layers,
                "embed_dim": cfg.embed_dim, "num_classes": self.num_classes, "mask_embedding": self.mask_embedding}


SPEC_FORMS = ("'embedded', 'raydistill:PATH', 'torchaudio:PATH[#arch]' or 'hf:DIR' "
              "(a file spec may end with '?mask_emb=FILE')")


def parse_spec(spec: str) -> tuple[str, str]:
    """``"torchaudio:/x.pt"`` -> ``("torchaudio", "/x.pt")``; ``"embedded"`` -> ``("embedded", "")``
    (``?mask_emb=FILE&head=FILE`` options stay in the second part: :func:`split_options`)."""
    kind, _, rest = spec.partition(":")
    if kind not in KINDS or (kind == "embedded") != (rest == ""):
        raise UserError(f"bad teacher {spec!r}: use {SPEC_FORMS}")
    split_options(spec)
    return kind, rest


def split_options(spec: str) -> tuple[str, dict[str, str]]:
    """``"torchaudio:/x.pt#hubert-base?mask_emb=/e.pt&head=/h.pt"`` ->
    ``("torchaudio:/x.pt#hubert-base", {"mask_emb": "/e.pt", "head": "/h.pt"})``."""
    base, query, options = spec.partition("?")
    found: dict[str, str] = {}
    for option in options.split("&") if query else ():
        name, eq, path = option.partition("=")
        if name not in OPTIONS or not eq:
            raise UserError(f"bad teacher {spec!r}: the options after '?' are mask_emb=FILE and head=FILE, joined by '&'")
        if not path:
            raise UserError(f"bad teacher {spec!r}: ?{name}= needs a file")
        if name in found:
            raise UserError(f"bad teacher {spec!r}: {name}= is given twice")
        found[name] = path
    return base, found


def load_teacher(spec: str) -> Teacher:
    """Load a teacher from a file spec (``embedded`` must be resolved to a checkpoint first)."""
    kind, _ = parse_spec(spec)
    if kind == "embedded":
        raise ValueError("resolve 'embedded' to a raydistill checkpoint with raydistill.prepare first")
    base, options = split_options(spec)
    mask_file, head_file = options.get("mask_emb"), options.get("head")
    target = base.partition(":")[2]
    if kind == "raydistill":
        teacher = _load_raydistill(Path(target), spec)
    elif kind == "torchaudio":
        path, _, arch = target.partition("#")
        teacher = _load_torchaudio(Path(path), arch or None, spec)
    else:
        teacher = _load_hf(Path(target), spec)
    if mask_file is not None:
        # The key stays the file's: caches built from a teacher hold its outputs on unmasked
        # input, which the mask embedding does not change.
        teacher.model.mask_emb.data.copy_(read_mask_embedding(Path(mask_file), teacher.model.cfg.embed_dim))
        teacher.mask_embedding = True
    if head_file is not None:
        if teacher.head is not None:
            raise UserError(f"teacher {spec}: its file has a pre-training head already; drop ?head=")
        teacher.head = read_head(Path(head_file), teacher.model.cfg.embed_dim).eval().requires_grad_(False)
        teacher.key = stable_hash([teacher.key, file_hash(Path(head_file))])  # the logits are the head's
    return teacher


HEAD_KEYS = {"final_proj.weight": ("final_proj.weight",), "final_proj.bias": ("final_proj.bias",),
             "label_embs": ("label_embs", "label_embs_concat", "label_embeddings")}


def read_head(path: Path, dim: int) -> PredictionHead:
    """HuBERT's pre-training head held by ``path`` (see the module's docstring), for a teacher of width ``dim``."""
    state = load_torch_file(path, "head file", "a state dict of HuBERT's pre-training head")
    if not isinstance(state, dict):
        raise UserError(f"head file {path}: expected a state dict, found {type(state).__name__}")
    head_state = {}
    for name, names in HEAD_KEYS.items():
        found = [k for k in state if isinstance(k, str) and any(k == n or k.endswith("." + n) for n in names)]
        if len(found) != 1:
            raise UserError(f"head file {path}: expected one entry named (or ending in) {' or '.join(names)}, "
                            f"found {len(found)}")
        head_state[name] = state[found[0]]
    weight, labels = head_state["final_proj.weight"], head_state["label_embs"]
    if weight.dim() != 2 or weight.shape[1] != dim or labels.dim() != 2 or labels.shape[1] != weight.shape[0]:
        raise UserError(f"head file {path}: final_proj.weight {list(weight.shape)} and label embeddings "
                        f"{list(labels.shape)} do not fit a teacher of width {dim}")
    head = PredictionHead(dim, labels.shape[0], labels.shape[1])
    head.load_state_dict(head_state)
    return head


def read_mask_embedding(path: Path, dim: int) -> Tensor:
    """The [dim] mask embedding held by ``path``: a tensor, or a state dict with one entry named
    (or ending in) one of :data:`MASK_EMB_KEYS`; a torch file, or a Hugging Face ``.safetensors``."""
    if path.suffix == ".safetensors" and path.is_file():
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise UserError("reading a .safetensors file needs safetensors: pip install 'raydistill[hf]'") from None
        try:
            value = load_file(str(path))
        except Exception as e:
            reason = one_line(e, None, first_line=True)
            raise UserError(f"cannot read mask embedding file {path}: {reason}") from None
    else:
        value = load_torch_file(path, "mask embedding file")
    if isinstance(value, dict):
        found = [k for k in value if isinstance(k, str) and any(k == n or k.endswith("." + n) for n in MASK_EMB_KEYS)]
        if len(found) != 1:
            raise UserError(f"mask embedding file {path}: expected a tensor, or a state dict with one of "
                            f"{', '.join(MASK_EMB_KEYS)}; found {len(found)} such entries")
        value = value[found[0]]
    if not isinstance(value, Tensor) or tuple(value.shape) != (dim,) or not value.is_floating_point():
        shape = list(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise UserError(f"mask embedding file {path}: expected a float tensor of shape [{dim}] "
                        f"(the teacher's width), found {shape}")
    if not torch.isfinite(value).all():
        raise UserError(f"mask embedding file {path}: the embedding holds NaN or inf")
    return value


def _load_raydistill(path: Path, spec: str) -> Teacher:
    """A raydistill checkpoint's student encoder as a teacher, with its HuBERT pre-training head
    if it has one. The checkpoint says what it holds (``encoder``, ``masks_input``); files from
    before it did are read as the embedded teacher's kind (:func:`_legacy_encoder`)."""
    ckpt = read_checkpoint(path)
    encoder = ckpt.get("encoder") or _legacy_encoder(ckpt, path)
    if encoder["kind"] != "HubertModel":
        raise UserError(f"{path}: a teacher must be a HuBERT, this checkpoint holds a {encoder['kind']}")
    state = ckpt["state_dict"]
    model = HubertModel(HubertConfig(**encoder["config"]))
    load_weights(model, _part(state, "model."), f"{path}: weights do not match its config")
    head = None
    if {"head.final_proj.weight", "head.label_embs"} <= set(state):  # a HuBERT pre-training head
        head = PredictionHead(model.cfg.embed_dim, *state["head.label_embs"].shape)
        load_weights(head, _part(state, "head."), f"{path}: head weights do not match")
    # The mask embedding was trained only if training masked the input (the embedded teacher,
    # DiceHuBERT, ARMHuBERT with masking); other methods freeze it at its random initialisation.
    return Teacher(model=model, head=head, spec=spec, key=file_hash(path),
                   mask_embedding=bool(ckpt.get("masks_input", encoder.get("masks_input", False))))


def _part(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _legacy_encoder(ckpt: dict, path: Path) -> dict:
    """``encoder`` of a checkpoint written before checkpoints recorded it: the config's student
    as configured. Exact for the embedded teacher (HuBERT pre-training, input masked); a student
    whose method reshaped it (ARMHuBERT's FFN re-investment) fails the weight check with a
    one-line error, and only HuBERT pre-training is taken to have a trained mask embedding."""
    config = TrainConfig.from_dict(ckpt["config"], where=str(path))
    return {"kind": "HubertModel" if isinstance(config.student, HubertConfig) else type(config.student).__name__,
            "config": config.student.to_dict(), "masks_input": config.method == PRETRAIN}


# --------------------------------------------------------------------------- torchaudio
_KNOWN = {(768, 12): "hubert-base", (1024, 24): "hubert-large"}


def _load_torchaudio(path: Path, arch: Optional[str], spec: str) -> Teacher:
    state = load_torch_file(path, "teacher file", "a torchaudio state dict")
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise UserError(f"{path} is not a torchaudio state dict (a mapping of parameter names to tensors)")
    head_state, mask_emb = {}, None
    if any(k.startswith("wav2vec2.") for k in state):  # hubert_pretrain_* layout
        mask_emb = state.get("mask_generator.mask_embedding")
        head_state = {
            "final_proj.weight": state.get("logit_generator.final_proj.weight"),
            "final_proj.bias": state.get("logit_generator.final_proj.bias"),
            "label_embs": state.get("logit_generator.label_embeddings"),
        }
        state = _part(state, "wav2vec2.")
    proj = state.get("encoder.feature_projection.projection.weight")
    if proj is None:
        raise UserError(f"{path} is not a HuBERT state dict: no encoder.feature_projection.projection.weight")
    num_layers = len({k.split(".")[3] for k in state if k.startswith("encoder.transformer.layers.")})
    arch = arch or _KNOWN.get((proj.shape[0], num_layers))
    if arch not in ARCHITECTURES:
        raise UserError(
            f"cannot tell the architecture of {path} (embed_dim {proj.shape[0]}, {num_layers} layers): "
            f"name it as torchaudio:{path}#<{'|'.join(sorted(ARCHITECTURES))}>"
        )
    model = HubertModel(ARCHITECTURES[arch])
    load_weights(model.encoder, legacy_keys(state), f"{path} does not match the {arch} layout")
    if mask_emb is not None:
        model.mask_emb.data.copy_(mask_emb)
    head = None
    if all(v is not None for v in head_state.values()) and head_state:
        labels = head_state["label_embs"]
        head = PredictionHead(model.cfg.embed_dim, labels.shape[0], labels.shape[1])
        head.load_state_dict(head_state)
    return Teacher(model=model, head=head, spec=spec, key=stable_hash([file_hash(path), arch]),
                   mask_embedding=mask_emb is not None)


# --------------------------------------------------------------------------- Hugging Face
def _load_hf(directory: Path, spec: str) -> Teacher:
    if not (directory / "config.json").is_file():
        raise UserError(f"{directory} is not a Hugging Face model directory: config.json is missing")
    try:
        import transformers
    except ImportError:
        raise UserError("reading a Hugging Face teacher needs transformers: pip install 'raydistill[hf]'") from None
    try:
        hf, loading = transformers.HubertModel.from_pretrained(str(directory), local_files_only=True,
                                                               output_loading_info=True)
    except Exception as e:
        reason = one_line(e, None, first_line=True)
        raise UserError(f"cannot load a HubertModel from {directory}: {reason}") from None
    try:
        model = from_hf_model(hf)
    except UserError as e:
        raise UserError(f"{directory}: {e}") from None
    # transformers creates masked_spec_embed (randomly) whenever the config masks, so whether
    # the weights held it is told by the keys it reports missing
    trained = getattr(hf, "masked_spec_embed", None) is not None and not any(
        k.endswith("masked_spec_embed") for k in loading.get("missing_keys", ()))
    if trained:
        model.mask_emb.data.copy_(hf.masked_spec_embed.data)
    weights = sorted(p for p in directory.iterdir() if p.suffix in (".safetensors", ".bin"))
    key = stable_hash([file_hash(directory / "config.json")] + [file_hash(p) for p in weights])
    return Teacher(model=model, spec=spec, key=key, mask_embedding=trained)

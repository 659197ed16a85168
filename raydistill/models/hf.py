"""Hugging Face ``transformers`` HuBERT <-> raydistill, both directions in one place: the
architecture (:func:`from_hf_config`, :func:`to_hf_config`) and the weights
(:func:`from_hf_model`, :func:`to_hf_model`). ``transformers`` is imported by the caller
(it is an optional dependency: ``pip install 'raydistill[hf]'``)."""

from __future__ import annotations

import torch

from raydistill.errors import UserError
from raydistill.models.checkpoint import load_weights
from raydistill.models.config import HubertConfig
from raydistill.models.hubert import HubertModel


# HubertConfig field <-> transformers.HubertConfig attribute, for the fields that map one to one
# (the CNN's layers and its norm are spelt differently and converted by hand below)
SAME_FIELDS = (
    ("conv_bias", "conv_bias"),
    ("embed_dim", "hidden_size"),
    ("num_layers", "num_hidden_layers"),
    ("num_heads", "num_attention_heads"),
    ("ffn_dim", "intermediate_size"),
    ("pos_conv_kernel", "num_conv_pos_embeddings"),
    ("pos_conv_groups", "num_conv_pos_embedding_groups"),
    ("layer_norm_first", "do_stable_layer_norm"),
    ("dropout_input", "feat_proj_dropout"),
    ("attention_dropout", "attention_dropout"),
    ("activation_dropout", "activation_dropout"),
    ("dropout", "hidden_dropout"),
    ("layer_drop", "layerdrop"),
)


def from_hf_config(c) -> HubertConfig:
    """The :class:`HubertConfig` of a ``transformers.HubertConfig``."""
    return HubertConfig(
        conv_layers=tuple(zip(c.conv_dim, c.conv_kernel, c.conv_stride)),
        extractor_mode="group_norm" if c.feat_extract_norm == "group" else "layer_norm",
        **{ours: getattr(c, theirs) for ours, theirs in SAME_FIELDS},
    )


def to_hf_config(cfg: HubertConfig):
    """The ``transformers.HubertConfig`` of a raydistill :class:`HubertConfig` (the inverse of
    :func:`from_hf_config`)."""
    try:
        import transformers
    except ImportError:
        raise UserError("the Hugging Face export needs transformers: pip install 'raydistill[hf]'") from None
    return transformers.HubertConfig(
        conv_dim=[c for c, _, _ in cfg.conv_layers],
        conv_kernel=[k for _, k, _ in cfg.conv_layers],
        conv_stride=[s for _, _, s in cfg.conv_layers],
        feat_extract_norm="group" if cfg.extractor_mode == "group_norm" else "layer",
        **{theirs: getattr(cfg, ours) for ours, theirs in SAME_FIELDS},
        hidden_act="gelu",
        feat_proj_layer_norm=True,
        layer_norm_eps=1e-5,
    )


def to_hf_model(cfg: HubertConfig, model: HubertModel):
    """A ``transformers.HubertModel`` holding ``model``'s weights (same module names as ours and
    torchaudio's; a student without a feature projection gets HF's as the identity)."""
    import transformers

    hf = transformers.HubertModel(to_hf_config(cfg)).eval()
    ours = model.encoder
    projection = ours.encoder.feature_projection.state_dict()
    if not cfg.project_features:  # fairseq style, no Linear: HF always has one, make it the identity
        projection["projection.weight"] = torch.eye(cfg.embed_dim)
        projection["projection.bias"] = torch.zeros(cfg.embed_dim)
    parts = ((hf.feature_extractor, ours.feature_extractor.state_dict()), (hf.feature_projection, projection),
             (hf.encoder, ours.encoder.transformer.state_dict()))
    for target, state in parts:
        missing, unexpected = target.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise UserError(f"cannot map the student onto HubertModel.{type(target).__name__}: "
                            f"missing {missing[:3]}, unexpected {unexpected[:3]}")
    with torch.no_grad():
        hf.masked_spec_embed.copy_(model.mask_emb)
    return hf


def from_hf_model(hf) -> HubertModel:
    """A :class:`HubertModel` holding a ``transformers.HubertModel``'s encoder weights (through
    torchaudio's importer, whose layout is ours). The mask embedding is left to the caller."""
    from torchaudio.models.wav2vec2.utils import import_huggingface_model

    model = HubertModel(from_hf_config(hf.config))
    load_weights(model.encoder, import_huggingface_model(hf.eval()).state_dict(), "weights do not match its config")
    return model

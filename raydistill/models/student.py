"""What a method trains: the student encoder a config describes (``build_student``), inside a
:class:`Student` with the method's training-only heads; :class:`MaskedPredictor` is the one with
HuBERT's prediction head (masked prediction)."""

from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from raydistill.models.config import HubertConfig
from raydistill.models.heads import PredictionHead
from raydistill.models.hubert import HubertModel, HubertOutput
from raydistill.models.lstm import LstmConfig, LstmModel


def build_student(cfg) -> nn.Module:
    """The student encoder a config describes: :class:`HubertModel` or ``LstmModel``."""
    if isinstance(cfg, HubertConfig):
        return HubertModel(cfg)
    if isinstance(cfg, LstmConfig):
        return LstmModel(cfg)
    raise TypeError(f"no student model for a {type(cfg).__name__}")


class Student(nn.Module):
    """A student (``.model``: what is evaluated and exported) plus training-only heads."""

    def __init__(self, model: nn.Module, **heads: nn.Module):
        super().__init__()
        self.model = model
        for name, head in heads.items():
            setattr(self, name, head)

    def forward(self, wave: Tensor, mask: Optional[Tensor] = None, feature_grad_mult: float = 1.0,
                need_attention: bool = False) -> HubertOutput:
        return self.model(wave, None, mask=mask, feature_grad_mult=feature_grad_mult, need_attention=need_attention)


class MaskedPredictor(Student):
    """The :class:`Student` of masked-prediction training: the encoder a config describes with
    HuBERT's prediction head (``head``).

    ``state_dict()`` keys: ``model.*`` (the :class:`HubertModel`, or ``LstmModel``) and ``head.*``.
    """

    def __init__(self, cfg, num_classes: int, final_dim: int = 256):
        super().__init__(build_student(cfg), head=PredictionHead(cfg.embed_dim, num_classes, final_dim))

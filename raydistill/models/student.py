"""What a method trains: the student encoder a config describes, alone or with HuBERT's
prediction head (masked prediction)."""

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


class MaskedPredictor(nn.Module):
    """A student encoder with its prediction head: what masked-prediction training optimises.

    ``state_dict()`` keys: ``model.*`` (the :class:`HubertModel`, or ``LstmModel``) and ``head.*``.
    """

    def __init__(self, cfg, num_classes: int, final_dim: int = 256):
        super().__init__()
        self.model = build_student(cfg)  # a HubertModel, or an LstmModel for an LstmConfig
        self.head = PredictionHead(cfg.embed_dim, num_classes, final_dim)

    def forward(self, wave: Tensor, mask: Optional[Tensor], feature_grad_mult: float = 1.0) -> HubertOutput:
        return self.model(wave, None, mask=mask, feature_grad_mult=feature_grad_mult)

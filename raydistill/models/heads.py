"""Training-only heads that map student states to teacher features; discarded after training.

* :class:`LayerProjections`: one Linear per distilled layer (ARMHuBERT/MaskHuBERT's
  ``LayerWiseProjHead``, 12 × Linear(d → 768); docs/methods.md#ffn-reinvestment-and-sizes).
* :class:`DistilHeads`: DistilHuBERT's prediction heads, ``Linear(d, d·n) → GELU →
  SplitLinear`` on the last student layer (docs/methods.md#distilhubert; s3prl
  ``upstream/distiller/model.py``).
* :class:`PredictionHead`: HuBERT's pre-training head (masked prediction of units; the KD
  students' head on the teacher's logits).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LayerProjections(nn.Module):
    """``num`` independent ``Linear(in_dim → out_dim)``, the i-th applied to the i-th input."""

    def __init__(self, in_dim: int, out_dim: int, num: int):
        super().__init__()
        self.projections = nn.ModuleList(nn.Linear(in_dim, out_dim) for _ in range(num))

    def __len__(self) -> int:
        return len(self.projections)

    def forward(self, states: list[Tensor]) -> list[Tensor]:
        """``num`` tensors [..., in_dim] -> ``num`` tensors [..., out_dim]."""
        if len(states) != len(self.projections):
            raise ValueError(f"expected {len(self.projections)} states, found {len(states)}")
        return [proj(x) for proj, x in zip(self.projections, states)]


class SplitLinear(nn.Module):
    """``num`` independent ``in_dim → out_dim`` linear maps, the k-th on the k-th chunk of the input.

    s3prl's ``SplitLinear`` (same U(±1/√in_dim) init): weight [num, in_dim, out_dim], bias [num, out_dim].
    """

    def __init__(self, in_dim: int, num: int, out_dim: int):
        super().__init__()
        self.in_dim, self.num, self.out_dim = in_dim, num, out_dim
        bound = in_dim**-0.5
        self.weight = nn.Parameter(torch.empty(num, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(num, out_dim).uniform_(-bound, bound))

    def forward(self, x: Tensor) -> Tensor:
        """x [..., num·in_dim] -> [..., num, out_dim]."""
        if x.shape[-1] != self.num * self.in_dim:
            raise ValueError(f"expected last dim {self.num * self.in_dim}, found {x.shape[-1]}")
        chunks = x.reshape(*x.shape[:-1], self.num, self.in_dim)
        return torch.einsum("...ki,kio->...ko", chunks, self.weight) + self.bias


class DistilHeads(nn.Module):
    """DistilHuBERT's ``num`` prediction heads: ``Linear(in, in·num) → GELU → SplitLinear(in, num, out)``.

    For in = out = 768 and num = 3 they hold 3,543,552 parameters, training-only
    (docs/methods.md#distilhubert).
    """

    def __init__(self, in_dim: int, out_dim: int, num: int):
        super().__init__()
        self.num = num
        self.hidden = nn.Linear(in_dim, in_dim * num)
        self.split = SplitLinear(in_dim, num, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        """x [B, T, in_dim] (the last student layer) -> predictions [B, num, T, out_dim]."""
        if x.ndim != 3:
            raise ValueError(f"expected [batch, frames, dim], found {list(x.shape)}")
        return self.split(F.gelu(self.hidden(x))).permute(0, 2, 1, 3)


class PredictionHead(nn.Module):
    """HuBERT's pre-training head: ``logits[t, c] = cos(W·h_t, e_c) / temperature`` over all units.

    Equivalent to fairseq's ``compute_nce`` (whose ``[positive; all C]`` layout with the
    duplicate positive set to -inf gives the same C-way softmax), computed as one matmul.
    """

    def __init__(self, embed_dim: int, num_classes: int, final_dim: int = 256, temperature: float = 0.1):
        super().__init__()
        self.final_proj = nn.Linear(embed_dim, final_dim)
        self.label_embs = nn.Parameter(torch.empty(num_classes, final_dim).uniform_())
        self.temperature = temperature

    @property
    def num_classes(self) -> int:
        return self.label_embs.shape[0]

    def forward(self, x: Tensor) -> Tensor:
        """x: [N, D] frames -> logits [N, K]."""
        proj = F.normalize(self.final_proj(x).float(), dim=-1)
        emb = F.normalize(self.label_embs.float(), dim=-1)
        return proj @ emb.t() / self.temperature

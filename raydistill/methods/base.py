"""What every distillation method provides, and what a training step hands it.

A method is a small object with five functions (see :class:`Method`): what it needs from the
teacher (so the search computes it once, before any trial), how it builds the student and
its training-only heads, whether it masks the student's input, how it runs the student, and
its loss. The training loop (``train/loop.py``) knows nothing else about methods.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn

from raydistill.config import TrainConfig
from raydistill.targets.store import TeacherNeeds
from raydistill.teacher.info import TeacherInfo
from raydistill.teacher.sources import LOGITS

if TYPE_CHECKING:
    from raydistill.teacher.sources import Teacher
    from raydistill.train.data import Batch


def layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """Teacher layer matched to each student layer 1..L_s: ``round(l · L_t / L_s)`` (identity at equal depth)."""
    return [max(1, round(layer * teacher_layers / student_layers)) for layer in range(1, student_layers + 1)]


class StepContext:
    """One training step as a method sees it: config, step, DDP-correct means and the teacher.

    Teacher outputs come from the cache (features computed once per search on whole
    utterances) or from the live teacher on this batch's crops, as ``teacher_features``
    asks; masked input and attention maps always come from the live teacher.
    """

    def __init__(self, config: TrainConfig, step: int, batch: Batch, *, teacher_info: TeacherInfo,
                 teacher: Optional[Teacher], centroids: Optional[Tensor], device: torch.device, world: int):
        self.config, self.step, self.batch, self.device, self.world = config, step, batch, device, world
        self.teacher_info = teacher_info
        self.centroids = centroids  # [K, D] of the run's units (DiceHuBERT soft labels)
        self._teacher = teacher
        self._runs: dict = {}

    def mean(self, total: Tensor, count: Tensor | float) -> Tensor:
        """``total / count`` over all ranks: each rank scales its sum by world / global count,
        and DDP's gradient averaging over ranks completes the global mean. A Python count is
        filled in on the device: copying it there would wait for the device to finish."""
        if isinstance(count, Tensor):
            count = count.detach().to(total.device, torch.float32, copy=True)
        else:
            count = torch.full((), float(count), dtype=torch.float32, device=total.device)
        if self.world > 1:
            dist.all_reduce(count)
        return total * self.world / count.clamp(min=1.0)

    def live(self, mask: Optional[Tensor] = None, attention: bool = False):
        """The live teacher's output on this batch (once per step per input)."""
        key = (mask is not None, attention)
        if key not in self._runs:
            if self._teacher is None:
                raise RuntimeError("this method needs the live teacher, but the run has none")
            with torch.no_grad():
                wave = self.batch.wave.to(self.device, non_blocking=True)
                self._runs[key] = self._teacher.model(wave, None, mask=mask, need_attention=attention)
        return self._runs[key]

    def teacher_states(self, layers: list[int]) -> dict[int, Tensor]:
        """Teacher hidden states [B, T, D] of unmasked input for the given layers."""
        if self.config.teacher_features == "cached":
            return {layer: self.batch.features[layer].to(self.device, non_blocking=True) for layer in layers}
        states = self.live().states
        return {layer: states[layer] for layer in layers}

    def teacher_logits(self) -> Tensor:
        """Teacher pre-training logits [B, T, C] of unmasked input."""
        if self.config.teacher_features == "cached":
            return self.batch.features[LOGITS].to(self.device, non_blocking=True)
        return self._teacher.logits(self.live().states[-1])


class Method:
    """Base class: override what differs. ``name`` is the ``method:`` value of a config."""

    name = ""
    # the config paths ``needs`` reads besides ``method`` and ``teacher_features``: a search space
    # gives them every value its parameters can, and caches the union of what those trials read
    # (SearchSpace.teacher_needs); tests/test_plan.py checks sampled trials against that union
    needs_fields: tuple[str, ...] = ()

    def needs(self, config: TrainConfig, teacher: TeacherInfo) -> TeacherNeeds:
        raise NotImplementedError

    def build(self, config: TrainConfig, teacher: TeacherInfo) -> nn.Module:
        """The student with its training-only heads; ``.model`` is the student itself."""
        raise NotImplementedError

    def masks(self, config: TrainConfig) -> bool:
        """Whether the student's input is masked (the loop samples the mask)."""
        return False

    def forward(self, module: nn.Module, wave: Tensor, mask: Optional[Tensor], config: TrainConfig):
        """Run the student (``module``, as :meth:`build` made it); returns its ``HubertOutput``.
        The loop runs this and :meth:`loss` inside one ``DDP.forward`` (train/loop.py: MethodStep)."""
        return module(wave, mask, config.optim.feature_grad_mult)

    def loss(self, module: nn.Module, out, mask: Optional[Tensor], ctx: StepContext) -> tuple[Tensor, dict]:
        """(loss to minimise, metrics) for one step. Metrics are detached 0-dim tensors, left on
        the device: the loop averages them there and reads them at its reports only."""
        raise NotImplementedError

    def init_from_teacher(self, module: nn.Module, teacher: nn.Module, config: TrainConfig) -> None:
        """Copy teacher weights into a fresh student, for methods that start from the teacher."""


def frozen_mask_emb(model: nn.Module) -> nn.Module:
    """Methods that never mask leave the mask embedding untrained (and DDP must not wait for it)."""
    if hasattr(model, "mask_emb"):
        model.mask_emb.requires_grad_(False)
    return model

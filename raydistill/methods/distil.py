"""DistilHuBERT (docs/methods.md#distilhubert), the baseline: a shallow student initialised
from the teacher's CNN and first layers, with one prediction head per chosen teacher layer on
its last layer, trained on ``L1/D − λ·log σ(cos)`` per frame. The paper sums over heads, the
s3prl code averages (``distil.head_reduction``). The student sees unmasked input.
"""

from __future__ import annotations

import torch

from raydistill.config import TrainConfig
from raydistill.errors import UserError
from raydistill.losses import distilhubert_loss
from raydistill.methods.base import Method, StepContext, frozen_mask_emb
from raydistill.models.heads import DistilHeads
from raydistill.models.hubert import HubertModel
from raydistill.targets.store import TeacherNeeds
from raydistill.models.student import Student
from raydistill.teacher.info import TeacherInfo


def predicted_layers(config: TrainConfig, teacher_layers: int) -> tuple[int, ...]:
    """The teacher layers the heads predict: as configured, or thirds of its depth (4, 8, 12 of 12)."""
    layers = config.distil.teacher_layers or tuple(sorted({max(1, round(teacher_layers * k / 3)) for k in (1, 2, 3)}))
    if max(layers) > teacher_layers:
        raise UserError(f"distil.teacher_layers {list(layers)}: the teacher has {teacher_layers} layers")
    return layers


class DistilHubert(Method):
    name = "distilhubert"
    needs_fields = ("distil.teacher_layers", "distil.init_from_teacher")

    def needs(self, config: TrainConfig, teacher: TeacherInfo) -> TeacherNeeds:
        layers = predicted_layers(config, teacher.num_layers)
        if config.teacher_features == "live" or config.distil.init_from_teacher:
            # the trial loads the teacher anyway (to copy its weights); features may stay cached
            live = config.teacher_features == "live"
            return TeacherNeeds(features=() if live else layers, live=True)
        return TeacherNeeds(features=layers)

    def build(self, config: TrainConfig, teacher: TeacherInfo):
        layers = predicted_layers(config, teacher.num_layers)
        model = frozen_mask_emb(HubertModel(config.student))
        return Student(model, heads=DistilHeads(config.student.embed_dim, teacher.embed_dim, len(layers)))

    def init_from_teacher(self, module, teacher, config: TrainConfig) -> None:
        """Copy every student weight whose name and shape the teacher shares (CNN, projection,
        positional conv, first layers); the student's architecture must match the teacher's."""
        if not config.distil.init_from_teacher:
            return
        source = teacher.model.state_dict()
        target = module.model.state_dict()
        mismatched = [k for k, v in target.items() if k != "mask_emb" and (k not in source or source[k].shape != v.shape)]
        if mismatched:
            raise UserError(f"distil.init_from_teacher: the student's {mismatched[0]} has no same-shaped teacher "
                            f"weight ({len(mismatched)} differ); give the student the teacher's widths "
                            "or set distil.init_from_teacher: false")
        with torch.no_grad():
            for k, v in target.items():
                if k != "mask_emb":
                    v.copy_(source[k])

    def loss(self, module, out, mask, ctx: StepContext):
        cfg = ctx.config.distil
        layers = predicted_layers(ctx.config, ctx.teacher_info.num_layers)
        teacher = ctx.teacher_states(list(layers))
        preds = module.heads(out.states[-1])  # [B, heads, N, D_T]
        valid = torch.ones(out.states[-1].shape[:2], dtype=torch.bool, device=preds.device)
        terms = [ctx.mean(*distilhubert_loss(preds[:, j], teacher[layer], valid, cos_weight=cfg.cos_weight))
                 for j, layer in enumerate(layers)]
        loss = sum(terms) if cfg.head_reduction == "sum" else sum(terms) / len(terms)
        return loss, {f"layer{layer}_loss": t.detach() for layer, t in zip(layers, terms)}

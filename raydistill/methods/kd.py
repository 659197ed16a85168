"""KD and decoupled KD on HuBERT's pre-training logits, BiLSTM student (arXiv 2309.09920, METHODS.md §2).

Teacher logits: the pre-training head's ``cos(P·o_t, e_c)/0.1`` over its C units, cached
exactly (float32) once per search. Target class t of a frame: the argmax of the teacher's
logits (the units the teacher was trained on are not part of a checkpoint; METHODS.md §2.3
lists this fallback [U]). The student sees unmasked input and every frame counts (the
paper's choice of frames is not known [U]; this is DistilHuBERT-style distillation).

    L = w_CE · CE(z_S, t) + min(step / warm-up, 1) · (KD or α·TCKD + β·NCKD)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from raydistill.config import TrainConfig
from raydistill.errors import UserError
from raydistill.losses import dkd_loss, kd_loss
from raydistill.methods.base import Method, StepContext, Student, TeacherInfo, frozen_mask_emb
from raydistill.models.hubert import PredictionHead
from raydistill.models.lstm import LstmModel
from raydistill.targets.store import TeacherNeeds


class LogitKD(Method):
    name = "kd"

    def needs(self, config: TrainConfig, teacher: TeacherInfo) -> TeacherNeeds:
        if teacher.num_classes < 2:
            raise UserError("method kd distils the teacher's pre-training logits, but the teacher has no "
                            "pre-training head (use a raydistill teacher or a torchaudio hubert_pretrain checkpoint)")
        cached = config.teacher_features == "cached"
        return TeacherNeeds(logits=cached, live=not cached)

    def build(self, config: TrainConfig, teacher: TeacherInfo):
        model = frozen_mask_emb(LstmModel(config.student))
        dim, classes = config.student.embed_dim, teacher.num_classes
        head = nn.Linear(dim, classes) if config.kd.head == "linear" else PredictionHead(dim, classes, config.final_dim)
        return Student(model, head=head)

    def loss(self, module, out, mask, ctx: StepContext):
        kd = ctx.config.kd
        student = module.head(out.states[-1]).flatten(0, 1).float()
        teacher = ctx.teacher_logits().flatten(0, 1).float()
        target = teacher.argmax(-1)
        frames = student.shape[0]
        ce_sum = F.cross_entropy(student, target, reduction="sum")
        if kd.mode == "kd":
            distill = kd_loss(student, teacher, temperature=kd.temperature)
        else:
            distill = dkd_loss(student, teacher, target, alpha=kd.alpha, beta=kd.beta, temperature=kd.temperature)
        warmup = kd.warmup_frac * ctx.config.optim.max_steps
        ramp = min(1.0, ctx.step / warmup) if warmup > 0 else 1.0
        # kd_loss / dkd_loss are frame means: × frames gives this rank's sum for the global mean
        loss = ctx.mean(kd.ce_weight * ce_sum + ramp * distill * frames, frames)
        with torch.no_grad():
            agree = (student.argmax(-1) == target).float().mean().item()
        return loss, {"ce_loss": (ce_sum / frames).item(), "kd_loss": distill.item(), "unit_acc": agree}

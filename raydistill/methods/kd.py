"""KD and decoupled KD on HuBERT's pre-training logits, BiLSTM student (arXiv 2309.09920).

Equations, defaults and options: docs/methods.md#kd-and-dkd.

Teacher logits: the pre-training head's ``cos(P·o_t, e_c)/0.1`` over its C units, cached
exactly (float32) once per search. Target class t of a frame: the argmax of the teacher's
logits (the units the teacher was trained on are not part of a checkpoint: a fallback [U],
docs/methods.md#kd-logits-and-targets). The student sees unmasked input and every frame counts
(the paper's choice of frames is not known [U]; this is DistilHuBERT-style distillation). The
student's CNN has the teacher's architecture; whether it starts from the teacher's weights is
not stated [U]: random by default, copied with ``kd.init_cnn_from_teacher`` (as DistilHuBERT).

    L = w_CE · CE(z_S, t) + min(step / warm-up, 1) · (KD or α·TCKD + β·NCKD)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from raydistill.config import TrainConfig
from raydistill.errors import UserError
from raydistill.losses import dkd_loss, kd_loss
from raydistill.methods.base import Method, StepContext, frozen_mask_emb
from raydistill.models.heads import PredictionHead
from raydistill.models.lstm import LstmModel
from raydistill.targets.store import TeacherNeeds
from raydistill.models.student import Student
from raydistill.teacher.info import TeacherInfo


class LogitKD(Method):
    name = "kd"
    needs_fields = ("kd.init_cnn_from_teacher",)

    def needs(self, config: TrainConfig, teacher: TeacherInfo) -> TeacherNeeds:
        if teacher.num_classes < 2:
            raise UserError("method kd distils the teacher's pre-training logits, but the teacher has no "
                            "pre-training head (use a raydistill teacher or a torchaudio hubert_pretrain checkpoint)")
        cached = config.teacher_features == "cached"
        # init_cnn_from_teacher: the trial loads the teacher to copy its CNN; logits may stay cached
        return TeacherNeeds(logits=cached, live=not cached or config.kd.init_cnn_from_teacher)

    def build(self, config: TrainConfig, teacher: TeacherInfo):
        model = frozen_mask_emb(LstmModel(config.student))
        dim, classes = config.student.embed_dim, teacher.num_classes
        head = nn.Linear(dim, classes) if config.kd.head == "linear" else PredictionHead(dim, classes, config.final_dim)
        return Student(model, head=head)

    def init_from_teacher(self, module, teacher, config: TrainConfig) -> None:
        """With ``kd.init_cnn_from_teacher``: copy the teacher's CNN into the student's."""
        if not config.kd.init_cnn_from_teacher:
            return
        source = teacher.model.encoder.feature_extractor.state_dict()
        target = module.model.feature_extractor
        shapes = {k: v.shape for k, v in target.state_dict().items()}
        if shapes != {k: v.shape for k, v in source.items()}:
            t = teacher.model.cfg
            raise UserError(f"kd.init_cnn_from_teacher: the student's CNN differs from the teacher's (conv_layers "
                            f"{[list(c) for c in t.conv_layers]}, extractor_mode {t.extractor_mode}, conv_bias "
                            f"{t.conv_bias}); give the student that CNN or set kd.init_cnn_from_teacher: false")
        target.load_state_dict(source)

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
            agree = (student.argmax(-1) == target).float().mean()
        return loss, {"ce_loss": ce_sum.detach() / frames, "kd_loss": distill.detach(), "unit_acc": agree}

"""MaskHuBERT / ARMHuBERT (Recycle-and-Distill, arXiv 2305.11685).

Equations, defaults and options: docs/methods.md#maskhubert-and-armhubert.

* Masking distillation (docs/methods.md#masking-distillation): one mask M; the student sees
  masked input; per layer l, masked frames are matched to the teacher on *unmasked* input and
  unmasked frames to the teacher on *masked* input (its own mask embedding), through a
  projection head per layer:
  ``L = hint · Σ_{l<L} (L_m^l + L_u^l) + final · (L_m^L + L_u^L)``, each term normalised by
  B·N. The teacher runs live (twice per step). ``arm.masking: false`` distils plain
  layer-to-layer features (unmasked input, cached teacher features).
* Attention-map reuse (docs/methods.md#attention-map-reuse) is the student's ``reuse_pattern``
  (``2by6``, ``3by4``, ...): reusing layers have no Q/K projections. ``arm.reinvest_ffn``
  widens every FFN so the parameters saved by reuse go back into the student
  (docs/methods.md#ffn-reinvestment-and-sizes).
* Masking ratio: the released code sets fairseq's ``mask_prob`` (``mask.prob``, 0.8 for 960 h,
  0.4 for 100 h), which on LibriSpeech's long utterances masks about that fraction of the
  frames (75-79 % at 0.8) but on short crops much less (54 % on the embedded corpus). The
  searched knob is therefore ``mask.frac``, the fraction of frames masked, with ``mask.frac_end``
  for a linear schedule (``mask.prob`` / ``mask.prob_end`` stay for the released setting). The
  released configs use ``mask.selection: uniform`` (span lengths U{0..20}, no overlap).
  Every masking method logs the fraction it really masked (``mask_frac``); docs/masking.md.
"""

from __future__ import annotations

import dataclasses

from raydistill.config import TrainConfig
from raydistill.losses import masking_distill_loss
from raydistill.methods.base import Method, StepContext, frozen_mask_emb, layer_map
from raydistill.models.heads import LayerProjections
from raydistill.models.config import HubertConfig
from raydistill.models.hubert import HubertModel
from raydistill.targets.store import TeacherNeeds
from raydistill.models.student import Student
from raydistill.teacher.info import TeacherInfo


def effective_student(config: TrainConfig) -> HubertConfig:
    """The student as built: with ``arm.reinvest_ffn``, the FFN widened by the saved Q/K parameters.

    Each reusing layer saves ``2(d² + d)``; one FFN unit costs ``2d + 1`` per layer, so every
    layer's FFN grows by ``⌊reusing · 2(d² + d) / (L · (2d + 1))⌋`` units.
    """
    student = config.student
    if config.method != "armhubert" or not config.arm.reinvest_ffn or not student.reuse_pattern:
        return student
    d, layers = student.embed_dim, student.num_layers
    reusing = sum(1 for computes in student.reuse_pattern if not computes)
    extra = (reusing * 2 * (d * d + d)) // (layers * (2 * d + 1))
    return dataclasses.replace(student, ffn_dim=student.ffn_dim + extra)


class ArmHubert(Method):
    name = "armhubert"
    needs_fields = ("arm.masking", "student.num_layers")

    def needs(self, config: TrainConfig, teacher: TeacherInfo) -> TeacherNeeds:
        if config.arm.masking or config.teacher_features == "live":
            return TeacherNeeds(live=True)
        return TeacherNeeds(features=tuple(sorted(set(layer_map(config.student.num_layers, teacher.num_layers)))))

    def build(self, config: TrainConfig, teacher: TeacherInfo):
        student = effective_student(config)
        model = HubertModel(student)
        if not config.arm.masking:
            frozen_mask_emb(model)
        return Student(model, proj=LayerProjections(student.embed_dim, teacher.embed_dim, student.num_layers))

    def masks(self, config: TrainConfig) -> bool:
        return config.arm.masking

    def loss(self, module, out, mask, ctx: StepContext):
        arm = ctx.config.arm
        mapping = layer_map(len(out.states) - 1, ctx.teacher_info.num_layers)
        if mask is not None:
            unmasked = ctx.live().states
            masked = ctx.live(mask=mask).states
        else:
            unmasked = masked = ctx.teacher_states(sorted(set(mapping)))
            mask = out.states[0].new_zeros(out.states[0].shape[:2], dtype=bool)
        preds = module.proj(out.states[1:])
        loss, metrics = 0.0, {}
        for i, (pred, t) in enumerate(zip(preds, mapping)):
            term = ctx.mean(*masking_distill_loss(pred, unmasked[t], masked[t], mask, loss=arm.loss))
            final = i == len(mapping) - 1
            loss = loss + (arm.final_weight if final else arm.hint_weight) * term
            if final:
                metrics["final_layer_loss"] = term.detach()
        return loss, metrics

"""DiceHuBERT (arXiv 2507.02911; docs/methods.md#dicehubert): the student relearns HuBERT's
masked prediction of the teacher's k-means units, as one more HuBERT iteration.

Hard labels (CE on the nearest unit) or soft labels (KL to ``softmax(-‖h - c‖/τ)``), on
masked frames; optional unmasked-frame loss (fairseq ``pred_nomask_weight``), HuBERT's CNN
feature penalty, and the paper's ablation ``L_SSL + w·L_feat`` (layer-to-layer MSE through
per-layer projections, Eq. 1; the teacher side comes from unmasked input).

With the unmasked-frame loss, ``nomask_norm`` says what the two sums are divided by: one count,
masked + unmasked frames, as fairseq's HuBERT criterion (the default: the knob is fairseq's), or
each its own count (``per_term``, the masked mean + w × the unmasked mean), the loss the embedded
teacher was pretrained with (``hubert-pretrain`` keeps it). The papers' loss (weight 0) is the
masked mean either way.
"""

from __future__ import annotations

import torch

from raydistill.config import TrainConfig
from raydistill.losses import feature_mse, masked_prediction_loss, soft_unit_labels, unit_accuracy
from raydistill.methods.base import Method, StepContext, layer_map
from raydistill.models.heads import LayerProjections
from raydistill.models.student import MaskedPredictor
from raydistill.targets.store import TeacherNeeds
from raydistill.teacher.info import TeacherInfo


class DiceHubert(Method):
    name = "dicehubert"
    needs_fields = ("targets.teacher_layer", "targets.num_clusters", "targets.labels", "feat_weight",
                    "student.num_layers")

    def needs(self, config: TrainConfig, teacher: TeacherInfo) -> TeacherNeeds:
        t = config.targets
        features = {t.teacher_layer} if t.labels == "soft" else set()
        if config.feat_weight > 0:
            features |= set(layer_map(config.student.num_layers, teacher.num_layers))
        units = ((t.teacher_layer, t.num_clusters),)
        if config.teacher_features == "live":  # soft labels and L_feat from the teacher run in the trial
            return TeacherNeeds(units=units, live=bool(features))
        return TeacherNeeds(units=units, features=tuple(sorted(features)))

    def build(self, config: TrainConfig, teacher: TeacherInfo):
        module = MaskedPredictor(config.student, config.targets.num_clusters, config.final_dim)
        if config.feat_weight > 0:
            module.feat_proj = LayerProjections(config.student.embed_dim, teacher.embed_dim, config.student.num_layers)
        return module

    def masks(self, config: TrainConfig) -> bool:
        return True

    def loss(self, module, out, mask, ctx: StepContext):
        config, batch = ctx.config, ctx.batch
        last = out.states[-1]
        labels = batch.labels.to(ctx.device, non_blocking=True)
        t = config.targets
        soft_features = ctx.teacher_states([t.teacher_layer])[t.teacher_layer] if t.labels == "soft" else None
        centroids = ctx.centroids

        def predict(select):
            logits = module.head(last[select])
            if soft_features is None:
                return logits, labels[select]
            return logits, soft_unit_labels(soft_features[select], centroids, t.temperature)

        logits, targets = predict(mask)
        masked_sum = masked_prediction_loss(logits, targets)
        count = mask.sum()
        metrics = {"masked_loss": masked_sum.detach() / count,
                   "unit_acc": unit_accuracy(logits.detach(), targets) / count}
        if config.nomask_weight > 0:
            nomask_logits, nomask_targets = predict(~mask)
            nomask_sum = masked_prediction_loss(nomask_logits, nomask_targets)
            nomask_count = (~mask).sum()
            if config.nomask_norm == "fairseq":  # one sample size: every frame of both terms
                loss = ctx.mean(masked_sum + config.nomask_weight * nomask_sum, count + nomask_count)
            else:
                loss = ctx.mean(masked_sum, count) + config.nomask_weight * ctx.mean(nomask_sum, nomask_count)
            metrics["nomask_loss"] = nomask_sum.detach() / nomask_count
        else:
            loss = ctx.mean(masked_sum, count)
        loss = loss + config.feature_pen_weight * out.features_pen
        if config.feat_weight > 0:
            teacher_layers = layer_map(config.student.num_layers, ctx.teacher_info.num_layers)
            targets = ctx.teacher_states(sorted(set(teacher_layers)))
            valid = torch.ones(last.shape[:2], dtype=torch.bool, device=last.device)
            preds = module.feat_proj(out.states[1:])
            feat = sum(ctx.mean(*feature_mse(p, targets[tl], valid)) for p, tl in zip(preds, teacher_layers))
            feat = feat / len(teacher_layers)  # α_l = 1 / L_s
            loss = loss + config.feat_weight * feat
            metrics["feat_loss"] = feat.detach()
        return loss, metrics



class HubertPretrain(DiceHubert):
    """HuBERT iteration 1 (the embedded teacher): the same masked prediction, of MFCC units."""

    name = "hubert-pretrain"

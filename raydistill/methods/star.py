"""STaR (arXiv 2312.09040; docs/methods.md#star): distil temporal relations, not features.

* layer-wise temporal Gram matrix ``G^l = X^l X^lᵀ`` (N × N: no projection head needed);
* intra-layer temporal Gram matrix ``Ğ^{l+1} = X^l (X^{l+1})ᵀ`` (input and output of a layer,
  ``X^0`` = the Transformer input);
* optionally the head-averaged attention maps (needs the live teacher, and a student without
  layer drop: a skipped layer computes no map, so the config refuses the pair).

``L = w_layer · mean_l d(G_S, G_T) + w_intra · mean_l d(Ğ_S, Ğ_T) + w_attn · mean_l d(Ā_S, Ā_T)``.
The paper's normalisation and distance are not known [U]; defaults: Gram ÷ channels, MSE.
Student layer l is matched to teacher layer ``round(l·L_T/L_S)`` (STaR keeps equal depth).
The student sees unmasked input.
"""

from __future__ import annotations

import torch

from raydistill.config import TrainConfig
from raydistill.losses import attention_map_loss, gram_distance, temporal_gram
from raydistill.methods.base import Method, StepContext, frozen_mask_emb, layer_map
from raydistill.models.hubert import HubertModel
from raydistill.targets.store import TeacherNeeds
from raydistill.models.student import Student
from raydistill.teacher.info import TeacherInfo


class Star(Method):
    name = "star"
    needs_fields = ("star.attn_weight",)

    def needs(self, config: TrainConfig, teacher: TeacherInfo) -> TeacherNeeds:
        live = config.teacher_features == "live" or config.star.attn_weight > 0
        layers = () if config.teacher_features == "live" else tuple(range(teacher.num_layers + 1))
        return TeacherNeeds(features=layers, live=live)

    def build(self, config: TrainConfig, teacher: TeacherInfo):
        return Student(frozen_mask_emb(HubertModel(config.student)))

    def forward(self, module, wave, mask, config: TrainConfig):
        return module(wave, None, config.optim.feature_grad_mult, need_attention=config.star.attn_weight > 0)

    def loss(self, module, out, mask, ctx: StepContext):
        star = ctx.config.star
        mapping = [0] + layer_map(len(out.states) - 1, ctx.teacher_info.num_layers)
        teacher = ctx.teacher_states(sorted(set(mapping)))
        valid = torch.ones(out.states[0].shape[:2], dtype=torch.bool, device=out.states[0].device)

        def gram_loss(pairs):
            total = 0.0
            for (s1, s2), (t1, t2) in pairs:
                g_s = temporal_gram(out.states[s1], out.states[s2], norm=star.norm)
                g_t = temporal_gram(teacher[t1], teacher[t2], norm=star.norm)
                total = total + ctx.mean(*gram_distance(g_s, g_t, valid, distance=star.distance))
            return total / len(pairs)

        layers = range(1, len(mapping))
        metrics, loss = {}, 0.0
        if star.layer_weight > 0:
            layer_wise = gram_loss([((l, l), (mapping[l], mapping[l])) for l in layers])
            loss = loss + star.layer_weight * layer_wise
            metrics["layer_tgm_loss"] = layer_wise.detach()
        if star.intra_weight > 0:
            intra = gram_loss([((l - 1, l), (mapping[l - 1], mapping[l])) for l in layers])
            loss = loss + star.intra_weight * intra
            metrics["intra_tgm_loss"] = intra.detach()
        if star.attn_weight > 0:
            t_att = ctx.live(attention=True).attentions
            attn = sum(ctx.mean(*attention_map_loss(out.attentions[l - 1], t_att[mapping[l] - 1], valid,
                                                    distance=star.attn_distance)) for l in layers) / len(layers)
            loss = loss + star.attn_weight * attn
            metrics["attn_loss"] = attn.detach()
        return loss, metrics

"""The papers' students as run presets: method + exact architecture + the teacher they assume.

``raydistill describe --preset NAME`` sizes them (docs/methods.md#paper-parameter-counts lists
the paper counts the tests hold them to); ``student: {preset: ...}`` in a config reuses the
architectures. Counting convention: fairseq's (the student's ``mask_emb`` included, no feature
projection when the CNN already ends in the model width); ``params`` leaves out training-only
heads, ``params_train`` keeps them.
"""

from __future__ import annotations

from raydistill.errors import UserError
from raydistill.models.config import thin_cnn
from raydistill.teacher.info import TeacherInfo

# The teachers the papers distil (pre-training head: 500 k-means units).
TEACHERS = {
    "hubert-base": TeacherInfo(num_layers=12, embed_dim=768, num_classes=500),
    "hubert-large": TeacherInfo(num_layers=24, embed_dim=1024, num_classes=500),
    "tiny-teacher": TeacherInfo(num_layers=4, embed_dim=192, num_classes=100),  # the embedded default
}

_BASE = {"preset": "hubert-base"}


# name -> (teacher, run config). Paper sizes in the comments (docs/methods.md#paper-parameter-counts).
RUN_PRESETS: dict[str, tuple[str, dict]] = {
    # 94,371,712 encoder + mask_emb; 94,697,600 with the pre-training head over 504 rows (94.70M)
    "hubert-base": ("hubert-base", {"method": "dicehubert", "student": _BASE,
                                    "targets": {"teacher_layer": 9, "num_clusters": 504}}),
    # 2 teacher-width layers initialised from the teacher, heads for layers 4, 8, 12 (23.49M)
    "distilhubert": ("hubert-base", {"method": "distilhubert",
                                     "student": {**_BASE, "num_layers": 2, "layer_drop": 0.0},
                                     "distil": {"teacher_layers": [4, 8, 12]}}),
    # DiceHuBERT (Table 2): narrow D/2 26M, D/4 9M, shallow L/6 23M, L/4 30M (truncated)
    "dicehubert-narrow-d2": ("hubert-base", {"method": "dicehubert",
                                             "student": {**_BASE, "embed_dim": 384, "ffn_dim": 1536},
                                             "targets": {"teacher_layer": 9, "num_clusters": 500}}),
    "dicehubert-narrow-d4": ("hubert-base", {"method": "dicehubert",
                                             "student": {**_BASE, "embed_dim": 192, "ffn_dim": 768},
                                             "targets": {"teacher_layer": 9, "num_clusters": 500}}),
    "dicehubert-shallow-l6": ("hubert-base", {"method": "dicehubert", "student": {**_BASE, "num_layers": 2},
                                              "targets": {"teacher_layer": 9, "num_clusters": 500}}),
    "dicehubert-shallow-l4": ("hubert-base", {"method": "dicehubert", "student": {**_BASE, "num_layers": 3},
                                              "targets": {"teacher_layer": 9, "num_clusters": 500}}),
    # Recycle-and-Distill, 12 projection heads counted as the paper does
    # (docs/methods.md#ffn-reinvestment-and-sizes)
    "maskhubert": ("hubert-base", {"method": "armhubert", "student": {"preset": "maskhubert"},
                                   "mask": {"selection": "uniform", "prob": 0.8},
                                   "optim": {"lr": 5.0e-4}}),  # 26.64M
    # ARMHuBERT as the paper defines it: a reusing layer takes the source layer's attention
    # probabilities as they are, per utterance and head; no layer gradient scaling
    "armhubert": ("hubert-base", {"method": "armhubert", "student": {"preset": "armhubert"},
                                  "mask": {"selection": "uniform", "prob": 0.8},
                                  "optim": {"lr": 5.0e-3}}),  # 26.45M
    # The released ARMHuBERT's training, at the same size as the paper preset: the reference code's
    # reuse (second softmax, heads and utterances mixed), layer gradient scaling, uniform spans,
    # MSE with hint 0.1 / final 1.0, lr 5e-3 with 5 % warm-up, full CNN gradients. FFN 864 is the
    # released width (the Q/K of every other layer re-invested), so arm.reinvest_ffn stays off.
    "armhubert-released": ("hubert-base", {
        "method": "armhubert",
        "student": {"preset": "armhubert", "reuse_pattern": [True, False] * 6, "reuse_mode": "reference_code",
                    "layer_grad_scale": True},
        "mask": {"selection": "uniform", "prob": 0.8, "length": 10, "min_space": 1},
        "arm": {"masking": True, "hint_weight": 0.1, "final_weight": 1.0, "loss": "mse", "reinvest_ffn": False},
        "optim": {"lr": 5.0e-3, "warmup_frac": 0.05, "betas": [0.9, 0.98], "eps": 1.0e-6, "feature_grad_mult": 1.0},
    }),  # 26.45M
    "armhubert-s": ("hubert-base", {"method": "armhubert",
                                    "student": {"preset": "armhubert-s", "reuse_mode": "reference_code",
                                                "layer_grad_scale": True},
                                    "mask": {"selection": "uniform", "prob": 0.8},
                                    "optim": {"lr": 5.0e-3}}),  # 22.39M
    # STaR: widths inferred from the exact counts [U] (docs/methods.md#star-students); thin CNN,
    # 12 layers, no heads
    "starhubert": ("hubert-base", {"method": "star", "student": {
        **_BASE, "conv_layers": [list(layer) for layer in thin_cnn(432)], "embed_dim": 432, "ffn_dim": 976,
        "project_features": False, "layer_drop": 0.0}}),  # 22.31M
    "starhubert-l": ("hubert-base", {"method": "star", "student": {
        **_BASE, "conv_layers": [list(layer) for layer in thin_cnn(480)], "embed_dim": 480, "ffn_dim": 1024,
        "project_features": False, "layer_drop": 0.0}}),  # 26.63M
    # KD/DKD (docs/methods.md#the-bilstm-student): HuBERT CNN + 4 x BiLSTM-384 on its 512-d
    # output; classifier over 500 units
    "lstm-kd": ("hubert-large", {"method": "kd", "student": {"arch": "lstm", "hidden": 384, "num_layers": 4},
                                 "kd": {"mode": "dkd", "alpha": 1.0, "beta": 4.0, "temperature": 1.0}}),
}


def preset(name: str) -> tuple[TeacherInfo, dict]:
    """(teacher shape, run config dict) of a named preset; unknown names are a :class:`UserError`."""
    if name not in RUN_PRESETS:
        raise UserError(f"unknown preset {name!r} (choose from {', '.join(RUN_PRESETS)})")
    teacher, config = RUN_PRESETS[name]
    return TEACHERS[teacher], config

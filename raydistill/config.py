"""Typed, validated configuration of one distillation run.

YAML files, CLI flags and search-space samples are plain nested dicts; they become a
frozen :class:`TrainConfig` here, once, and no code past this edge reads a dict.
Errors name the key path (``optim.lr``) and what was expected.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

from raydistill.errors import UserError
from raydistill.models.hubert import PRESETS, HubertConfig

METHODS = ("dicehubert",)  # distillation methods a search can use
PRETRAIN = "hubert-pretrain"  # HuBERT iteration 1 on MFCC units: how the embedded teacher is made


@dataclass(frozen=True)
class TargetConfig:
    """What the student predicts: k-means units of one teacher layer (DiceHuBERT §3.2)."""

    teacher_layer: int = 6  # hidden-state index: 0 = Transformer input, l = output of layer l
    num_clusters: int = 100  # K
    labels: str = "hard"  # "hard": argmin unit, CE; "soft": softmax(-dist/τ), KL
    temperature: float = 1.0  # τ of the soft labels (unused for hard labels)

    def __post_init__(self):
        if self.teacher_layer < 0:
            raise ValueError(f"teacher_layer must be >= 0, found {self.teacher_layer}")
        if self.num_clusters < 2:
            raise ValueError(f"num_clusters must be >= 2, found {self.num_clusters}")
        if self.labels not in ("hard", "soft"):
            raise ValueError(f"labels must be 'hard' or 'soft', found {self.labels!r}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, found {self.temperature}")


@dataclass(frozen=True)
class MaskConfig:
    """HuBERT span masking in fairseq's terms (METHODS.md §1.3): prob 0.8 × span 10 ≈ 57 % of frames."""

    prob: float = 0.8  # span-start rate × span length (fairseq mask_prob)
    length: int = 10  # span length in frames
    min_masks: int = 2

    def __post_init__(self):
        if not 0.0 < self.prob < 1.0:
            raise ValueError(f"prob must be in (0, 1), found {self.prob}")
        if self.length < 1:
            raise ValueError(f"length must be >= 1, found {self.length}")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warm-up and linear decay to 0 (the HuBERT recipe's shape, METHODS.md §1.2)."""

    lr: float = 5e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    warmup_frac: float = 0.08
    max_steps: int = 1000
    batch_seconds: float = 40.0  # padded audio seconds per batch, per worker
    max_seconds: float = 15.6  # longer utterances are randomly cropped (on frame boundaries)
    grad_clip: float = 10.0
    feature_grad_mult: float = 0.1  # CNN gradients × 0.1, as HuBERT

    def __post_init__(self):
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, found {self.lr}")
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, found {self.max_steps}")
        if not 0.0 <= self.warmup_frac < 1.0:
            raise ValueError(f"warmup_frac must be in [0, 1), found {self.warmup_frac}")
        if self.batch_seconds <= 0 or self.max_seconds <= 0:
            raise ValueError("batch_seconds and max_seconds must be positive")
        if not 0.0 < self.feature_grad_mult <= 1.0:
            raise ValueError(f"feature_grad_mult must be in (0, 1], found {self.feature_grad_mult}")


@dataclass(frozen=True)
class TrainConfig:
    """One distillation run: method, student, targets, masking, optimisation and evaluation."""

    method: str = "dicehubert"
    student: HubertConfig = field(default_factory=lambda: PRESETS["tiny-teacher"])
    targets: TargetConfig = field(default_factory=TargetConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    final_dim: int = 256  # projection size of the prediction head
    nomask_weight: float = 0.0  # weight of the loss on unmasked frames (fairseq pred_nomask_weight)
    feature_pen_weight: float = 10.0  # HuBERT's weight on the CNN feature penalty
    eval_every: int = 200  # steps between evaluations (one ASHA rung each)
    seed: int = 0

    def __post_init__(self):
        if self.method not in METHODS + (PRETRAIN,):
            raise ValueError(f"method must be one of {METHODS}, found {self.method!r}")
        if self.nomask_weight < 0:
            raise ValueError(f"nomask_weight must be >= 0, found {self.nomask_weight}")
        if self.eval_every < 1:
            raise ValueError(f"eval_every must be >= 1, found {self.eval_every}")
        if self.targets.teacher_layer > 1000:
            raise ValueError("teacher_layer is implausibly large")

    @property
    def num_evals(self) -> int:
        """Evaluations in a full run (the last one at ``max_steps``): ASHA's ``max_t``."""
        return -(-self.optim.max_steps // self.eval_every)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["student"] = self.student.to_dict()
        d["optim"]["betas"] = list(self.optim.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict, *, where: str = "config") -> "TrainConfig":
        """Build from a nested dict; unknown keys and bad values are a :class:`UserError`.

        ``student`` may also be a preset name (``student: tiny-teacher``) or a dict with
        ``preset:`` plus overrides.
        """
        d = dict(d)
        student = d.get("student")
        if isinstance(student, str) or (isinstance(student, dict) and "preset" in student):
            d["student"] = _student_from_preset(student, where)
        return _build(cls, d, where)


def _student_from_preset(spec: Any, where: str) -> dict:
    overrides = {} if isinstance(spec, str) else dict(spec)
    name = spec if isinstance(spec, str) else overrides.pop("preset")
    if name not in PRESETS:
        raise UserError(f"{where}: student: unknown preset {name!r} (choose from {', '.join(sorted(PRESETS))})")
    base = PRESETS[name].to_dict()
    base.update(overrides)
    return base


def _build(cls: type, d: Any, where: str) -> Any:
    """Recursively turn a dict into dataclass ``cls``, checking keys and scalar types."""
    if not isinstance(d, dict):
        raise UserError(f"{where}: expected a mapping, found {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - fields)
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, value in d.items():
        kwargs[name] = _convert(hints[name], value, f"{where}.{name}")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:
        raise UserError(f"{where}: {e}") from None


def _convert(hint: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if hint is bool:
        if not isinstance(value, bool):
            raise UserError(f"{where}: expected true/false, found {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise UserError(f"{where}: expected an integer, found {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{where}: expected a number, found {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise UserError(f"{where}: expected a string, found {value!r}")
        return value
    return value  # tuples (conv_layers, betas) are checked by the dataclass itself

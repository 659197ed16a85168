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
from raydistill.models.config import ARCHITECTURES, HubertConfig
from raydistill.models.lstm import LstmConfig
from raydistill.utils import check_choice

# Distillation methods a search can use (one module each under raydistill/methods/).
METHODS = ("dicehubert", "kd", "star", "armhubert", "distilhubert")
PRETRAIN = "hubert-pretrain"  # HuBERT iteration 1 on MFCC units: how the embedded teacher is made
TEACHER_FEATURES = ("cached", "live")


@dataclass(frozen=True)
class TargetConfig:
    """What the student predicts: k-means units of one teacher layer (DiceHuBERT §3.2;
    docs/methods.md#dicehubert-targets)."""

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
    """Which frames a training step masks, and how much of them.

    Two ways to say how much (docs/masking.md has the measurements):

    * ``prob`` is fairseq's ``mask_prob``, the knob HuBERT, DiceHuBERT and the ARMHuBERT code
      set: ``int(prob·T/length + U[0,1))`` spans per row, then every row cut to the batch's
      fewest masked frames. It is a span-start rate, not a fraction: how much it masks depends
      on the utterance length and the batch. On LibriSpeech (utterances of 250-800 frames)
      ``prob 0.8`` masks about 57 % of the frames with static spans and 75-79 % with uniform
      ones; on the embedded corpus's ≈ 100-frame crops, 47 % and 54 %.
    * ``frac`` > 0 (the "masking ratio" of MaskHuBERT/ARMHuBERT, as it comes out on
      LibriSpeech): the fraction of every row's frames that is masked, whatever the length.
      Spans are drawn with the same law until the row holds ``round(frac·T)`` masked frames
      (the last span is shortened to land on it); ``prob`` is then unused.

    ``prob_end`` / ``frac_end`` > 0 move the value linearly over training (MaskHuBERT's ratio
    schedule).
    """

    prob: float = 0.8  # span-start rate × span length (fairseq mask_prob)
    length: int = 10  # span length in frames
    min_masks: int = 2
    # "static": every span is `length` frames, spans may overlap (HuBERT, DiceHuBERT);
    # "uniform": span lengths ~ U{0..2·length}, no overlap, `min_space` frames between spans
    # (the ARMHuBERT/MaskHuBERT teacher override).
    selection: str = "static"
    min_space: int = 1  # "uniform" only
    prob_end: float = 0.0  # > 0: prob moves linearly from `prob` to `prob_end` over training
    frac: float = 0.0  # > 0: mask exactly this fraction of every row's frames (`prob` unused)
    frac_end: float = 0.0  # > 0 (with frac): frac moves linearly from `frac` to `frac_end` over training

    def __post_init__(self):
        if not 0.0 < self.prob < 1.0:
            raise ValueError(f"prob must be in (0, 1), found {self.prob}")
        if self.prob_end and not 0.0 < self.prob_end < 1.0:
            raise ValueError(f"prob_end must be in (0, 1) (or 0: no schedule), found {self.prob_end}")
        for name in ("frac", "frac_end"):
            value = getattr(self, name)
            if value and not 0.0 < value < 1.0:
                raise ValueError(f"{name} must be in (0, 1) (or 0: unused), found {value}")
        if self.frac_end and not self.frac:
            raise ValueError("frac_end schedules frac: set frac too")
        if self.frac and self.prob_end:
            raise ValueError("frac and prob_end exclude each other: with frac, schedule it with frac_end")
        if self.length < 1:
            raise ValueError(f"length must be >= 1, found {self.length}")
        check_choice("selection", self.selection, ("static", "uniform"))
        if self.min_space < 0:
            raise ValueError(f"min_space must be >= 0, found {self.min_space}")

    def prob_at(self, step: int, total: int) -> float:
        """The masking probability at ``step`` of ``total`` (linear schedule when ``prob_end`` is set)."""
        return _linear(self.prob, self.prob_end, step, total)

    def frac_at(self, step: int, total: int) -> float:
        """The masked fraction at ``step`` of ``total`` (0 when ``prob`` rules)."""
        return _linear(self.frac, self.frac_end, step, total)


def _linear(start: float, end: float, step: int, total: int) -> float:
    """``start`` moved linearly to ``end`` over ``total`` steps; ``end`` 0 means no schedule."""
    if not end:
        return start
    return start + (end - start) * min(1.0, step / max(1, total - 1))


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warm-up and linear decay to 0 (the HuBERT recipe's shape, docs/methods.md#optimiser)."""

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
    # "auto": bf16 autocast on CUDA, fp32 elsewhere (CPU bf16 autocast is slower than fp32 on
    # CPUs without bf16 matmul units); "bf16" / "fp32" force it.
    precision: str = "auto"
    compile: bool = False  # torch.compile the student (dynamic shapes: batches vary in length)
    # Gradient accumulation: each optimizer step sums the gradients of this many batches of
    # batch_seconds (each batch's loss × 1/grad_accum), a grad_accum times larger batch in the
    # memory of one (docs/training-loop.md).
    grad_accum: int = 1

    def __post_init__(self):
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        check_choice("precision", self.precision, ("auto", "bf16", "fp32"))
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
        if self.grad_accum < 1:
            raise ValueError(f"grad_accum must be >= 1, found {self.grad_accum}")


@dataclass(frozen=True)
class KDConfig:
    """KD / decoupled KD on the teacher's pre-training logits (arXiv 2309.09920; docs/methods.md#kd-and-dkd)."""

    mode: str = "dkd"  # "dkd": α·TCKD + β·NCKD; "kd": Hinton KD
    alpha: float = 1.0  # TCKD weight
    beta: float = 4.0  # NCKD weight (the paper's best; {1, 4} explored)
    temperature: float = 1.0  # T on the teacher's cos/0.1 logits
    # CE on the teacher's unit: the argmax of its logits [U] (docs/methods.md#kd-logits-and-targets)
    ce_weight: float = 1.0
    warmup_frac: float = 0.05  # KD term ramps linearly from 0 over this fraction of the steps
    head: str = "linear"  # student classifier: "linear" or "cosine" (HuBERT's cos/0.1 head) [U]
    # Start the student's CNN from the teacher's (it must have the teacher's conv_layers,
    # extractor_mode and conv_bias). The paper gives the student the teacher's CNN architecture but
    # does not say how it is initialised [U]: False (a random CNN, no teacher loaded in the trial)
    # keeps the method as it runs without the option; True is DistilHuBERT's choice.
    init_cnn_from_teacher: bool = False

    def __post_init__(self):
        check_choice("mode", self.mode, ("kd", "dkd"))
        check_choice("head", self.head, ("linear", "cosine"))
        if self.temperature <= 0 or self.alpha < 0 or self.beta < 0 or self.ce_weight < 0:
            raise ValueError("temperature must be positive and alpha, beta, ce_weight >= 0")
        if not 0.0 <= self.warmup_frac < 1.0:
            raise ValueError(f"warmup_frac must be in [0, 1), found {self.warmup_frac}")


@dataclass(frozen=True)
class StarConfig:
    """STaR temporal-relation distillation (arXiv 2312.09040; docs/methods.md#star). Defaults are [U]:
    Gram normalised by the channel count, MSE over valid frame pairs, weights 1 : 1, no attention."""

    layer_weight: float = 1.0  # layer-wise temporal Gram matrix G = X Xᵀ
    intra_weight: float = 1.0  # intra-layer temporal Gram matrix Ğ = X^l (X^{l+1})ᵀ
    # head-averaged attention maps; needs the live teacher and student.layer_drop 0 (a layer that
    # layer drop skips has no map; refused rather than skipped, STaR's students have no layer drop)
    attn_weight: float = 0.0
    norm: str = "dim"  # Gram normalisation: "none", "dim" (÷ channels), "cosine"
    distance: str = "mse"  # Gram distance: "mse", "l1", "kl" (row-softmaxed)
    attn_distance: str = "kl"  # attention-map distance: "kl" (rows) or "mse"

    def __post_init__(self):
        check_choice("norm", self.norm, ("none", "dim", "cosine"))
        check_choice("distance", self.distance, ("mse", "l1", "kl"))
        check_choice("attn_distance", self.attn_distance, ("kl", "mse"))
        if min(self.layer_weight, self.intra_weight, self.attn_weight) < 0:
            raise ValueError("loss weights must be >= 0")
        if self.layer_weight + self.intra_weight + self.attn_weight == 0:
            raise ValueError("at least one of layer_weight, intra_weight, attn_weight must be positive")


@dataclass(frozen=True)
class ArmConfig:
    """MaskHuBERT / ARMHuBERT (arXiv 2305.11685; docs/methods.md#maskhubert-and-armhubert): masking
    distillation with per-layer projection heads; attention-map reuse lives in the student
    (``student.reuse_pattern``)."""

    masking: bool = True  # masked frames ↔ teacher(unmasked input), unmasked ↔ teacher(masked input)
    hint_weight: float = 0.1  # every layer but the last
    final_weight: float = 1.0  # the last layer
    loss: str = "mse"  # "mse" (released configs) or "l1"
    # Raise the FFN width so a reusing student has the parameters of the same student without
    # reuse (the saved Q/K parameters re-invested, docs/methods.md#ffn-reinvestment-and-sizes);
    # False: use student.ffn_dim as given.
    reinvest_ffn: bool = False

    def __post_init__(self):
        check_choice("loss", self.loss, ("mse", "l1"))
        if self.hint_weight < 0 or self.final_weight < 0:
            raise ValueError("hint_weight and final_weight must be >= 0")


@dataclass(frozen=True)
class DistilConfig:
    """DistilHuBERT (docs/methods.md#distilhubert): prediction heads on the student's last layer."""

    teacher_layers: tuple[int, ...] = ()  # () = thirds of the teacher's depth (4, 8, 12 for 12 layers)
    cos_weight: float = 1.0  # λ of -log σ(cos)
    init_from_teacher: bool = True  # student CNN + first layers copied from the teacher
    head_reduction: str = "sum"  # over heads: "sum" (paper) or "mean" (s3prl code)

    def __post_init__(self):
        object.__setattr__(self, "teacher_layers", tuple(int(v) for v in self.teacher_layers))
        check_choice("head_reduction", self.head_reduction, ("sum", "mean"))
        if any(v < 1 for v in self.teacher_layers):
            raise ValueError("teacher_layers must be >= 1 (layer outputs)")
        if self.cos_weight < 0:
            raise ValueError("cos_weight must be >= 0")


SECTIONS = {"kd": "kd", "star": "star", "armhubert": "arm", "distilhubert": "distil"}  # method -> its section


@dataclass(frozen=True)
class TrainConfig:
    """One distillation run: method, student, targets, masking, optimisation and evaluation."""

    method: str = "dicehubert"
    student: HubertConfig | LstmConfig = field(default_factory=lambda: ARCHITECTURES["tiny-teacher"])
    targets: TargetConfig = field(default_factory=TargetConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    final_dim: int = 256  # projection size of the prediction head
    nomask_weight: float = 0.0  # weight of the loss on unmasked frames (fairseq pred_nomask_weight)
    # How the masked and unmasked sums are normalised when nomask_weight > 0. "fairseq" (default):
    # both by one count, masked + unmasked frames, as fairseq's HuBERT criterion does (its sample
    # size counts the frames of every term it adds): nomask_weight is fairseq's knob, so it means
    # what it means there. "per_term": each sum by its own frame count (the masked mean + w × the
    # unmasked mean), the embedded teacher's pretraining loss, kept so its cache key and weights do
    # not change. With nomask_weight 0 (the papers' loss) both are the masked mean.
    nomask_norm: str = "fairseq"
    feature_pen_weight: float = 10.0  # HuBERT's weight on the CNN feature penalty
    # DiceHuBERT's optional L_SSL + w·L_feat (layer-to-layer MSE, docs/methods.md#dicehubert-loss)
    feat_weight: float = 0.0
    kd: KDConfig = field(default_factory=KDConfig)
    star: StarConfig = field(default_factory=StarConfig)
    arm: ArmConfig = field(default_factory=ArmConfig)
    distil: DistilConfig = field(default_factory=DistilConfig)
    # Feature targets from the memory-mapped cache (computed once per search on whole
    # utterances) or from the teacher run inside the trial on the same crops. Masking
    # distillation and attention maps always need the live teacher.
    teacher_features: str = "cached"
    eval_every: int = 200  # steps between evaluations (one ASHA rung each)
    seed: int = 0

    def __post_init__(self):
        if self.method not in METHODS + (PRETRAIN,):
            raise ValueError(f"method must be one of {', '.join(METHODS)}, found {self.method!r}")
        check_choice("teacher_features", self.teacher_features, TEACHER_FEATURES)
        check_choice("nomask_norm", self.nomask_norm, ("fairseq", "per_term"))
        is_lstm = isinstance(self.student, LstmConfig)
        if is_lstm != (self.method == "kd"):
            raise ValueError(f"method {self.method} needs a {'BiLSTM' if self.method == 'kd' else 'HuBERT'} "
                             f"student (student.arch: {'lstm' if self.method == 'kd' else 'hubert'})")
        if self.method == "star" and self.star.attn_weight > 0 and self.student.layer_drop > 0:
            # a dropped layer computes no attention map; STaR's students run without layer drop
            raise ValueError(f"star.attn_weight > 0 needs student.layer_drop: 0 (found {self.student.layer_drop}): "
                             "a layer skipped by layer drop has no attention map to distil")
        if self.nomask_weight < 0 or self.feat_weight < 0:
            raise ValueError("nomask_weight and feat_weight must be >= 0")
        if self.eval_every < 1:
            raise ValueError(f"eval_every must be >= 1, found {self.eval_every}")
        if self.targets.teacher_layer > 1000:
            raise ValueError("teacher_layer is implausibly large")

    @property
    def num_evals(self) -> int:
        """Evaluations in a full run (the last one at ``max_steps``): ASHA's ``max_t``."""
        return -(-self.optim.max_steps // self.eval_every)

    def to_dict(self) -> dict:
        """Plain nested dict (YAML/JSON/MLflow params); only the active method's section.
        ``optim.grad_accum`` at 1 is left out: a configuration that does not accumulate keeps the
        dict it had before the option existed, and with it the keys hashed from that dict (study
        cells, warm-start matches, cached teachers)."""
        d = dataclasses.asdict(self)
        d["student"] = self.student.to_dict()
        d["optim"]["betas"] = list(self.optim.betas)
        if self.optim.grad_accum == 1:
            del d["optim"]["grad_accum"]
        d["distil"]["teacher_layers"] = list(self.distil.teacher_layers)
        for method, section in SECTIONS.items():
            if method != self.method:
                del d[section]
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
            d["student"] = student = _student_from_preset(student, where)
        if d.get("method") == "kd" and student is None:
            d["student"] = {"arch": "lstm"}
        if isinstance(d.get("student"), dict):
            arch = d["student"].get("arch", "hubert")
            if arch not in ("hubert", "lstm"):
                raise UserError(f"{where}.student.arch: must be hubert or lstm, found {arch!r}")
            if arch == "lstm":
                d["student"] = from_mapping(LstmConfig, d["student"], f"{where}.student")
            else:
                d["student"] = from_mapping(HubertConfig, {k: v for k, v in d["student"].items() if k != "arch"},
                                      f"{where}.student")
        return from_mapping(cls, d, where)


def _student_from_preset(spec: Any, where: str) -> dict:
    overrides = {} if isinstance(spec, str) else dict(spec)
    name = spec if isinstance(spec, str) else overrides.pop("preset")
    if name not in ARCHITECTURES:
        raise UserError(f"{where}: student: unknown preset {name!r} (choose from {', '.join(sorted(ARCHITECTURES))})")
    base = ARCHITECTURES[name].to_dict()
    base.update(overrides)
    return base


def from_mapping(cls: type, d: Any, where: str) -> Any:
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
    if dataclasses.is_dataclass(value):  # already built (the student)
        return value
    if dataclasses.is_dataclass(hint):
        return from_mapping(hint, value, where)
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

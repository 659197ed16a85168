"""The distillation methods, by the name a config's ``method:`` uses."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from raydistill.config import TrainConfig
from raydistill.methods.arm import ArmHubert
from raydistill.methods.base import Method, StepContext, layer_map
from raydistill.methods.dice import DiceHubert, HubertPretrain
from raydistill.methods.distil import DistilHubert
from raydistill.methods.kd import LogitKD
from raydistill.methods.star import Star
from raydistill.models.checkpoint import load_weights, read_checkpoint
from raydistill.models.macs import count_params, macs_per_second
from raydistill.models.student import Student  # the methods' API: what build() returns
from raydistill.teacher.info import TeacherInfo  # the methods' API: what build() and needs() take

REGISTRY: dict[str, Method] = {m.name: m for m in (DiceHubert(), LogitKD(), Star(), ArmHubert(), DistilHubert(),
                                                    HubertPretrain())}


def get_method(name: str) -> Method:
    return REGISTRY[name]


__all__ = ["REGISTRY", "Method", "StepContext", "Student", "TeacherInfo", "describe", "get_method", "layer_map",
           "load_student", "student_model", "teacher_needs"]


def teacher_needs(config, teacher: TeacherInfo):
    """What a run of ``config`` reads from the teacher (``TeacherNeeds``)."""
    return get_method(config.method).needs(config, teacher)


def student_model(config, teacher: TeacherInfo, seed: int | None = None):
    """The student of ``config`` as the method builds it (random init), without training heads."""
    import torch

    if seed is not None:
        torch.manual_seed(seed)
    return get_method(config.method).build(config, teacher).model


def describe(config, teacher: TeacherInfo, *, macs: bool = True) -> dict:
    """Sizes of a configuration's student: ``params`` (what inference keeps), ``params_train``
    (with the training-only heads) and ``macs_per_second`` (per second of 16 kHz audio)."""
    module = get_method(config.method).build(config, teacher)
    out = {"method": config.method, "params": count_params(module.model), "params_train": count_params(module)}
    if macs:
        out["macs_per_second"] = macs_per_second(module.model)
    return out


def load_student(path: str | Path) -> tuple[TrainConfig, nn.Module, dict]:
    """Rebuild a student from its checkpoint: (config, module in eval mode, teacher description).

    The module is what the method trained (``.model`` is the student, the rest its
    training-only heads), built from the config and the teacher's shape in the checkpoint.
    """
    ckpt = read_checkpoint(path)
    config = TrainConfig.from_dict(ckpt["config"], where=str(path))
    teacher = dict(ckpt.get("teacher") or {})
    info = TeacherInfo.of(teacher) if "num_layers" in teacher else TeacherInfo(0, 0)
    module = get_method(config.method).build(config, info)
    load_weights(module, ckpt["state_dict"], f"{path}: weights do not match its config")
    return config, module.eval(), teacher

"""Student checkpoints, and reading PyTorch files safely.

A checkpoint is ``{"config", "state_dict", "teacher", "encoder", "masks_input"}``: ``config`` is
the run's :class:`~raydistill.config.TrainConfig` as a dict, ``state_dict`` the weights of what
the method trained (the student in ``model.*``, its training-only heads beside it), ``teacher``
a description of the teacher (``Teacher.describe()``), ``encoder`` the student encoder's kind and
architecture as built, and ``masks_input`` whether training masked its input (so its mask
embedding is trained). The last two let a checkpoint serve as a teacher without the method
registry (:mod:`raydistill.teacher.sources`); the whole training module is rebuilt by
:func:`raydistill.methods.load_student`. Files are read with ``torch.load(weights_only=True)``:
a checkpoint can hold tensors and plain values only.
"""

from __future__ import annotations

import pickle
from pathlib import Path

from typing import TYPE_CHECKING

import torch
from torch import nn

from raydistill.errors import UserError
from raydistill.utils import atomic_write, log, one_line

if TYPE_CHECKING:
    from raydistill.config import TrainConfig

STUDENT_FILE = "student.pt"  # {config, state_dict, teacher}: all that export and evaluate need
STATE_FILE = "trainer_state.pt"  # optimizer, scheduler, step: only to resume training


def save_student(path: Path, config: TrainConfig, module: nn.Module, teacher: dict, *, masks_input: bool) -> None:
    """``module`` is what the method trained (``module.model``: the student encoder)."""
    encoder = module.model
    save_torch({"config": config.to_dict(), "state_dict": module.state_dict(), "teacher": teacher,
                "encoder": {"kind": type(encoder).__name__, "config": encoder.cfg.to_dict()},
                "masks_input": bool(masks_input)}, path)


def save_torch(obj, path: str | Path) -> None:
    """``torch.save`` through :func:`~raydistill.utils.atomic_write`: ``path`` keeps its last good
    content if the write fails (a full disk is one line naming it and the space its tensors need)."""
    with atomic_write(path, size=_tensor_bytes(obj)) as f:
        torch.save(obj, f)


def _tensor_bytes(obj) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def read_train_state(directory: str | Path) -> dict | None:
    """The ``trainer_state.pt`` of a checkpoint directory, or None (with a log line) if it is
    missing or unreadable: a state written before writes were atomic, or torn by a crash, must
    not stop the run that resumes from it; that run starts over instead."""
    path = Path(directory) / STATE_FILE
    try:
        state = load_torch_file(path, "training state")
        if not isinstance(state, dict) or not {"module", "optimizer", "scheduler", "step"} <= set(state):
            raise UserError(f"training state {path} lacks module, optimizer, scheduler or step")
    except UserError as e:
        log(f"cannot resume: {e}; starting over")
        return None
    return state


def load_torch_file(path: str | Path, what: str, expected: str = "a file of tensors"):
    """``torch.load(weights_only=True)`` (tensors and plain values only: no code runs on
    load); a missing, empty or unreadable file is a one-line :class:`UserError` naming it, and
    so is a pickle of other Python objects (``expected`` says what the file should have been)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist")
    if path.stat().st_size == 0:
        raise UserError(f"{what} {path} is empty")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # torch's refusal comes with paragraphs of advice: say it in one line
        if "global" in str(e).lower():  # the pickle names classes or functions to call
            raise UserError(f"{what} {path} is not {expected}: it holds Python objects besides tensors and "
                            "plain values (refused; nothing in it was run)") from None
        raise UserError(f"cannot read {what} {path}: not a PyTorch file, or a damaged one") from None
    except Exception as e:
        if "PytorchStreamReader" in str(e):  # a zip archive cut short or altered: its first sentence
            reason = one_line(e, None, first_line=True).split(". ")[0]
            raise UserError(f"cannot read {what} {path}: a damaged PyTorch file ({reason})") from None
        raise UserError(f"cannot read {what} {path}: {one_line(e, None, first_line=True)}") from None


def read_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint file safely; a missing or foreign file is a :class:`UserError`."""
    ckpt = load_torch_file(path, "checkpoint", "a raydistill checkpoint")
    if not isinstance(ckpt, dict) or not {"config", "state_dict"} <= set(ckpt):
        raise UserError(f"{path} is not a raydistill checkpoint (expected keys config, state_dict, teacher)")
    return ckpt


def state_mismatch(expected: dict, found: dict) -> str | None:
    """One line describing how ``found`` differs from the ``expected`` state dict, or None.

    (``load_state_dict``'s own error lists every key, hundreds of lines for a HuBERT.)
    """
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [k for k in expected if k in found and tuple(found[k].shape) != tuple(expected[k].shape)]
    if not (missing or unexpected or shapes):
        return None
    parts = []
    if shapes:
        k = shapes[0]
        parts.append(f"size mismatch for {k}: file has {list(found[k].shape)}, expected {list(expected[k].shape)}"
                     + (f" ({len(shapes)} tensors differ in size)" if len(shapes) > 1 else ""))
    if missing:
        parts.append(f"{len(missing)} missing key(s), e.g. {missing[0]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[0]}")
    return "; ".join(parts)


def load_weights(module, state: dict, where: str) -> None:
    """``module.load_state_dict(state)`` with a one-line :class:`UserError` on any mismatch."""
    problem = state_mismatch(module.state_dict(), state)
    if problem:
        raise UserError(f"{where}: {problem}")
    module.load_state_dict(state)

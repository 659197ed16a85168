"""The memory of one training step, measured on the CPU (``raydistill plan --memory``).

How: the step the loop runs (``train/loop.py``: the method's forward and loss, the backward,
gradient clipping, the AdamW step) runs on real CPU tensors under :class:`LiveTensors`, a
``TorchDispatchMode`` that counts the bytes of every tensor storage an operation creates (the
module's weights and the optimizer's state are created inside it too) and lets each go when
PyTorch frees it; the peak of that count is the figure. It counts tensors only: the CUDA
context, the caching allocator's rounding and fragmentation, cuDNN workspaces and DDP's
gradient buckets are not in it (docs/real-scale.md says what to leave for them).

The step is measured in steady state: the optimizer's state exists before it (as from the
second step on), the gradients do not (``zero_grad(set_to_none=True)``), and no layer is
dropped (``layer_drop`` 0: every layer runs, the worst case). A base-scale batch holds minutes
of audio, too much for a CPU, so the step runs on 2 and on 3 crops of the longest length a
batch holds (``optim.max_seconds``), and the bytes alive after each operation, which the two
runs share in order, are extended along their line to ``batch_seconds / max_seconds`` crops:
weights, gradients and optimizer state stay, activations, their gradients, the batch and its
cached teacher features grow with it. The peak over the operations is the figure (checked
against a step run at 5 crops: equal to the byte). One crop is not a point on that line (some
views of a single row need no copy), hence 2 and 3. A batch holds ``B`` crops of ``T`` seconds
with ``B x T <= batch_seconds`` (``train/data.py``), and attention makes a second of a longer
crop cost more, so this bounds every batch the loader makes. Both precisions are measured,
fp32 and bf16 autocast (the CPU's autocast: its op lists match CUDA's for matmuls,
convolutions and norms), and the larger is the figure: autocast keeps bf16 copies beside fp32
tensors, so fp32 alone is not a bound.
"""

from __future__ import annotations

import contextlib
import dataclasses
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from raydistill.config import TrainConfig
from raydistill.methods import StepContext, get_method
from raydistill.models.hubert import HubertModel
from raydistill.teacher.info import TeacherInfo
from raydistill.teacher.sources import LOGITS, Teacher
from raydistill.train.data import Batch
from raydistill.train.masking import sample_mask

SAMPLE_RATE = 16_000


class LiveTensors(TorchDispatchMode):
    """Bytes of the tensor storages alive now (``current``) and at most (``peak``) among those
    created by operations run inside the mode; with ``trace`` on, ``current`` after every
    operation, in order."""

    def __init__(self):
        super().__init__()
        self.current = 0
        self.peak = 0
        self.trace: list[int] = []
        self.tracing = False
        self._seen: dict[int, weakref.ref] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                self._track(t.untyped_storage())
        self.peak = max(self.peak, self.current)
        if self.tracing:
            self.trace.append(self.current)
        return out

    def _track(self, storage) -> None:
        key = storage.data_ptr()
        ref = self._seen.get(key)
        if ref is not None and ref() is not None or storage.nbytes() == 0:
            return
        size = storage.nbytes()
        self.current += size
        self._seen[key] = weakref.ref(storage, lambda _, key=key, size=size: self._free(key, size))

    def _free(self, key: int, size: int) -> None:
        self.current -= size
        self._seen.pop(key, None)


def step_bytes(config: TrainConfig, info: TeacherInfo, utterances: int, seconds: float, *, bf16: bool,
               teacher_arch=None) -> list[int]:
    """The tensor bytes alive after each operation of one steady-state training step of
    ``config`` on ``utterances`` crops of ``seconds`` (its peak: ``max``). A live teacher, when
    the method runs one, is built from ``teacher_arch``, a ``HubertConfig`` (its weights do not
    matter)."""
    if getattr(config.student, "layer_drop", 0.0) > 0:  # the worst case: every layer runs
        config = dataclasses.replace(config, student=dataclasses.replace(config.student, layer_drop=0.0))
    method = get_method(config.method)
    needs = method.needs(config, info)
    torch.manual_seed(0)
    with LiveTensors() as tracker:
        module = method.build(config, info)
        teacher = None
        if needs.live:
            teacher = Teacher(HubertModel(teacher_arch), "memory", "memory")
        params = [p for p in module.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=config.optim.lr)
        for p in params:  # the optimizer's state, as after the first step
            p.grad = torch.zeros_like(p)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

        samples = int(seconds * SAMPLE_RATE)
        frames = module.model.frames(samples)
        wave = torch.randn(utterances, samples)
        layers = list(needs.features) + ([LOGITS] if needs.logits else [])
        features = {layer: torch.randn(utterances, frames, info.num_classes if layer == LOGITS else info.embed_dim)
                    for layer in layers}
        labels = torch.randint(0, max(1, config.targets.num_clusters), (utterances, frames)) if needs.units else None
        centroids = torch.randn(config.targets.num_clusters, info.embed_dim) if needs.units else None
        batch = Batch(wave, labels, features, utterances * seconds)
        mask = None
        if method.masks(config):
            opt = config.optim
            mask = sample_mask(config.mask, [frames] * utterances, frames, prob=config.mask.prob_at(0, opt.max_steps),
                               frac=config.mask.frac_at(0, opt.max_steps), generator=torch.Generator().manual_seed(0))
        ctx = StepContext(config, 0, batch, teacher_info=info, teacher=teacher, centroids=centroids,
                          device=torch.device("cpu"), world=1)
        tracker.tracing = True  # the step starts here
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with autocast:
            out = method.forward(module, wave, mask, config)
            loss, _ = method.loss(module, out, mask, ctx)
        loss.float().backward()
        torch.nn.utils.clip_grad_norm_(params, config.optim.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return tracker.trace


def step_memory(config: TrainConfig, info: TeacherInfo, teacher_arch=None) -> dict:
    """The peak tensor bytes of a step at ``config``'s batch, the larger of fp32 and bf16, and
    how it was found: {bytes, precision, crops, crop_seconds, batch_seconds, extended}."""
    key = repr((dataclasses.asdict(config), info, teacher_arch))
    if key not in _MEASURED:  # a composed space's methods are its files' (plan --markdown plans both)
        _MEASURED[key] = _measure(config, info, teacher_arch)
    return dict(_MEASURED[key])


_MEASURED: dict[str, dict] = {}


def _measure(config: TrainConfig, info: TeacherInfo, teacher_arch) -> dict:
    seconds = config.optim.max_seconds
    audio = max(config.optim.batch_seconds, seconds)  # one crop may exceed the budget
    crops = audio / seconds
    best = None
    for bf16 in (False, True):
        two, three = (step_bytes(config, info, n, seconds, bf16=bf16, teacher_arch=teacher_arch) for n in (2, 3))
        if len(two) == len(three):  # the same operations: each one's bytes on its line
            total, extended = max(a + (crops - 2) * (b - a) for a, b in zip(two, three)), "per operation"
        else:  # nothing grows faster than the batch
            total, extended = max(three) * max(crops, 3) / 3, "scaled"
        if best is None or total > best["bytes"]:
            best = {"bytes": int(total), "precision": "bf16" if bf16 else "fp32", "crops": round(crops, 3),
                    "crop_seconds": seconds, "batch_seconds": audio, "extended": extended}
    return best

"""The distillation loop: plain PyTorch, no Ray, no MLflow.

``train(config, data, report=..., checkpoint_dir=...)`` runs the same from a unit test,
inside a Ray Train worker (which sets up ``torch.distributed``; the loop then wraps the
model in DDP) and on a GPU. It talks to the outside world only through two callbacks:
``report(metrics, checkpoint_dir_or_None)`` at every evaluation point, and
``evaluate(model, final) -> metrics`` which scores the frozen student.

What is distilled, and how, is the method's business (``raydistill/methods/``): the loop
builds the method's student, samples the mask when the method masks, runs the student and
minimises the method's loss, over ``optim.grad_accum`` batches per optimizer step. A step reads
nothing back from the device: metrics and the divergence check wait for the next report
(docs/training-loop.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.distributed as dist
from torch import nn

from raydistill.config import TrainConfig
from raydistill.methods import StepContext, get_method
from raydistill.teacher.info import TeacherInfo
from raydistill.models.checkpoint import STATE_FILE, STUDENT_FILE, read_train_state, save_student, save_torch
from raydistill.models.hubert import HubertModel
from raydistill.teacher.sources import Teacher
from raydistill.train.data import TrainData
from raydistill.train.masking import masked_fraction, sample_mask
from raydistill.utils import peak_memory

Report = Callable[[dict, Optional[Path]], None]
Evaluate = Callable[[HubertModel, bool], dict]


class Diverged(RuntimeError):
    """The loss became NaN or infinite."""


# Steps between reads of the divergence watch when no report falls due: a host-device sync that
# often costs nothing measurable, and a run that diverges stops within as many steps.
CHECK_EVERY = 100


def lr_lambda(step: int, warmup: int, total: int) -> float:
    """Linear warm-up to 1, then linear decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def autocast_dtype(precision: str, device: torch.device) -> Optional[torch.dtype]:
    """bf16 when asked, or on CUDA by default ("auto"); None means full fp32."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def prefetched(batches, device: torch.device):
    """On CUDA: load the next batch (FLAC decoding, cropping, cache reads) in a thread while the
    GPU runs this step, with its tensors in pinned memory so the copy to the GPU is asynchronous.
    Elsewhere the batches pass through unchanged (the loading competes for the same cores)."""
    if device.type != "cuda":
        return batches
    return read_ahead(batches, _pinned)


def _pinned(batch):
    return dataclasses.replace(
        batch, wave=batch.wave.pin_memory(),
        labels=batch.labels.pin_memory() if batch.labels is not None else None,
        features={k: v.pin_memory() for k, v in batch.features.items()})


def read_ahead(items, prepare: Callable):
    """``prepare(item)`` of the next item runs in a thread while the caller uses this one; an
    exception there is raised here, in order."""
    items = iter(items)

    def load(out: list):
        try:
            out.append(prepare(next(items)))
        except BaseException as e:  # StopIteration included: re-raised in the caller's thread
            out.append(e)

    slot: list = []
    thread = threading.Thread(target=load, args=(slot,), daemon=True)
    thread.start()
    while True:
        thread.join()
        item = slot.pop()
        if isinstance(item, StopIteration):
            return
        if isinstance(item, BaseException):
            raise item
        thread = threading.Thread(target=load, args=(slot,), daemon=True)
        thread.start()
        yield item


def train(
    config: TrainConfig,
    data: TrainData,
    *,
    report: Report,
    checkpoint_dir: Path,
    evaluate: Optional[Evaluate] = None,
    resume: Optional[Path] = None,
    teacher: Optional[dict] = None,
    live_teacher: Optional[Teacher] = None,
    device: str | torch.device = "cpu",
) -> dict:
    """Train a student; return the last metrics.

    Args:
        config: the run's configuration (``config.method`` picks the method).
        data: training split with its cached teacher targets.
        report: called at every evaluation point with the metrics and (rank 0) a directory
            holding ``student.pt`` and ``trainer_state.pt``.
        checkpoint_dir: where rank 0 writes checkpoints (overwritten at each evaluation).
        evaluate: scores the frozen student; ``final`` is True at the last step. Rank 0 only.
        resume: a checkpoint directory to continue from (same config); if its training state
            cannot be read, the run starts over (and says so).
        teacher: description of the teacher (``Teacher.describe()``), stored in the checkpoint;
            its ``num_layers``/``embed_dim``/``num_classes`` size the method's heads.
        live_teacher: the teacher itself, for methods that run it inside the loop.
        device: where to train.
    """
    device = torch.device(device)
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    opt = config.optim
    method = get_method(config.method)
    info = TeacherInfo.of(teacher) if teacher and "num_layers" in teacher else TeacherInfo(0, 0)
    torch.manual_seed(config.seed)  # identical init on every rank
    module = method.build(config, info).to(device)
    state = read_train_state(resume) if resume is not None else None  # None: unreadable, start over
    if state is None and live_teacher is not None:
        method.init_from_teacher(module, live_teacher, config)
    if live_teacher is not None:
        live_teacher.to(device)
    optimizer = torch.optim.AdamW(
        [p for p in module.parameters() if p.requires_grad], lr=opt.lr, betas=opt.betas, eps=opt.eps,
        weight_decay=opt.weight_decay, fused=device.type == "cuda",
    )
    warmup = max(1, int(opt.warmup_frac * opt.max_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_lambda(s, warmup, opt.max_steps))
    step = 0
    if state is not None:
        module.load_state_dict(state["module"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = int(state["step"])
    resumed_from_step = step  # reported: a trial restarted after a fault shows where it picked up
    amp = autocast_dtype(opt.precision, device)
    if opt.compile:
        module.model.compile(dynamic=True)  # in place: state_dict keys unchanged
    layer_drop = getattr(config.student, "layer_drop", 0.0) > 0  # dropped layers get no gradient
    step_module = MethodStep(method, module, config)
    trained = nn.parallel.DistributedDataParallel(step_module, find_unused_parameters=layer_drop) if world > 1 \
        else step_module
    centroids = data.centroids.to(device) if data.centroids is not None else None
    checkpoint_dir = Path(checkpoint_dir)
    mask_rng = torch.Generator().manual_seed(config.seed * 1000 + rank + 7919 * step)

    accum = opt.grad_accum
    ddp = isinstance(trained, nn.parallel.DistributedDataParallel)
    batches = prefetched(data.iterate(opt.batch_seconds, opt.max_seconds, seed=config.seed, start_step=step * accum,
                                      rank=rank, world=world), device)
    window = _Window()
    watch = _DivergenceWatch(device)
    metrics: dict = {}
    module.train()
    while step < opt.max_steps:
        optimizer.zero_grad(set_to_none=True)
        for micro in range(accum):
            batch = next(batches)
            wave = batch.wave.to(device, non_blocking=True)
            mask, masking = None, {}
            if method.masks(config):
                frames = module.model.frames(wave.shape[1])
                mask = sample_mask(config.mask, [frames] * wave.shape[0], frames,
                                   prob=config.mask.prob_at(step, opt.max_steps),
                                   frac=config.mask.frac_at(step, opt.max_steps), generator=mask_rng)
                masking = {"mask_frac": masked_fraction(mask)}  # what was masked, whatever the knob said
                mask = mask.to(device, non_blocking=True)
            ctx = StepContext(config, step, batch, teacher_info=info, teacher=live_teacher, centroids=centroids,
                              device=device, world=world)
            # DDP averages the gradients over ranks once per optimizer step, at its last micro-batch
            synced = not ddp or micro == accum - 1
            with contextlib.nullcontext() if synced else trained.no_sync():
                with torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext():
                    loss, extra = trained(wave, mask, ctx)
                loss = loss.float()
                (loss / accum).backward()
            watch.add(loss, step)
            window.add(audio_seconds=batch.seconds, loss=loss, **masking, **extra)
        grad_norm = nn.utils.clip_grad_norm_(module.parameters(), opt.grad_clip)
        optimizer.step()
        scheduler.step()
        step += 1
        window.add(grad_norm=grad_norm)
        evaluation = step % config.eval_every == 0 or step == opt.max_steps
        if evaluation or step % CHECK_EVERY == 0:
            watch.check(world)  # before any checkpoint: none is written after a non-finite loss
        if evaluation:
            metrics = {**window.summary(step, scheduler.get_last_lr()[0]), "world_size": world,
                       "resumed_from_step": resumed_from_step, **peak_memory(device)}
            final = step == opt.max_steps
            ckpt = None
            if rank == 0:
                ckpt = _checkpoint(checkpoint_dir, config, module, optimizer, scheduler, step, teacher)
                if evaluate is not None:
                    module.eval()
                    started = time.perf_counter()
                    metrics.update(evaluate(module.model, final))
                    metrics["eval_seconds"] = time.perf_counter() - started
                    module.train()
            if world > 1:
                dist.barrier()
            report(metrics, ckpt)
            window.start()
    return metrics


class MethodStep(nn.Module):
    """The method's whole step as one module: the student's forward and the loss, heads included.

    DDP is wrapped around this, not around the student alone: with ``find_unused_parameters``
    (layer drop) DDP marks every parameter it cannot reach from what its ``forward`` returns as
    unused, so a head run outside it (DiceHuBERT's prediction head, the methods' projections)
    would be marked ready twice, once as unused and once by its gradient. Its parameters are
    the student's: checkpoints save ``module``, whose state_dict keys stay unchanged."""

    def __init__(self, method, module: nn.Module, config: TrainConfig):
        super().__init__()
        self.method, self.module, self.config = method, module, config

    def forward(self, wave: torch.Tensor, mask: Optional[torch.Tensor], ctx: StepContext):
        out = self.method.forward(self.module, wave, mask, self.config)
        return self.method.loss(self.module, out, mask, ctx)


def _checkpoint(directory: Path, config, module, optimizer, scheduler, step, teacher) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    save_student(directory / STUDENT_FILE, config, module, teacher or {},
                 masks_input=get_method(config.method).masks(config))
    save_torch({"module": module.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "step": step}, directory / STATE_FILE)
    return directory


class _Window:
    """Running means of the training metrics since the last report.

    Tensor values are summed on the device (float64, as the Python floats they used to be) and
    read in one transfer by ``summary``: a read every step would make the host wait for the
    device each step instead of queueing the next one. Time is the window's wall clock up to that
    read, so it counts the device's work, not only the host's."""

    def __init__(self):
        self.train_seconds = 0.0  # whole run: time spent training, evaluations left out
        self.start()

    def start(self) -> None:
        self.sums: dict = {}
        self.counts: dict[str, int] = {}
        self.audio_seconds = 0.0
        self.started = time.perf_counter()

    def add(self, audio_seconds: float = 0.0, **values) -> None:
        self.audio_seconds += audio_seconds
        for k, v in values.items():
            if isinstance(v, torch.Tensor):
                v = v.detach().double()
            self.sums[k] = self.sums[k] + v if k in self.sums else v
            self.counts[k] = self.counts.get(k, 0) + 1

    def summary(self, step: int, lr: float) -> dict:
        on_device = [k for k, v in self.sums.items() if isinstance(v, torch.Tensor)]
        read = torch.stack([self.sums[k] for k in on_device]).tolist() if on_device else []
        sums = {**self.sums, **dict(zip(on_device, read))}
        seconds = time.perf_counter() - self.started
        self.train_seconds += seconds
        out = {k: v / self.counts[k] for k, v in sums.items()}
        out.update(step=step, lr=lr, train_seconds=self.train_seconds,
                   audio_seconds_per_second=self.audio_seconds / max(seconds, 1e-9))
        return out


class _DivergenceWatch:
    """The first non-finite loss and its step, noted on the device, so that a step need not wait
    for the device to know whether its loss was finite. ``check`` reads it (at every report and
    every ``CHECK_EVERY`` steps) and raises :class:`Diverged` as the step itself used to.

    Until then the run goes on: the steps after a non-finite loss update the weights with
    non-finite gradients, which is wasted work but harmless, since ``check`` comes before any
    checkpoint is written and the run ends there."""

    def __init__(self, device: torch.device):
        self.step = torch.full((), -1, dtype=torch.long, device=device)
        self.loss = torch.zeros((), device=device)

    def add(self, loss: torch.Tensor, step: int) -> None:
        first = ~torch.isfinite(loss.detach()) & (self.step < 0)
        self.step = torch.where(first, step, self.step)
        self.loss = torch.where(first, loss.detach(), self.loss)

    def check(self, world: int) -> None:
        """Raise on every rank if any rank has seen a non-finite loss (ranks agree before rank 0
        saves a checkpoint)."""
        anywhere = (self.step >= 0).long()
        if world > 1:
            dist.all_reduce(anywhere, op=dist.ReduceOp.MAX)
        step, loss, anywhere = torch.stack([self.step.double(), self.loss.double(), anywhere.double()]).tolist()
        if step >= 0:
            raise Diverged(f"loss became {loss} at step {int(step)}")
        if anywhere:
            raise Diverged("loss became non-finite on another rank")

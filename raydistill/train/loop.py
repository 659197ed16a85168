"""The distillation loop: plain PyTorch, no Ray, no MLflow.

``train(config, data, report=..., checkpoint_dir=...)`` runs the same from a unit test,
inside a Ray Train worker (which sets up ``torch.distributed``; the loop then wraps the
model in DDP) and on a GPU. It talks to the outside world only through two callbacks:
``report(metrics, checkpoint_dir_or_None)`` at every evaluation point, and
``evaluate(model, final) -> metrics`` which scores the frozen student.

Masked prediction (HuBERT / DiceHuBERT): spans of frames are replaced by the mask
embedding; the student predicts the teacher's k-means unit of each masked frame.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.distributed as dist
from torch import nn

from raydistill.config import TrainConfig
from raydistill.losses import masked_prediction_loss, soft_unit_labels, unit_accuracy
from raydistill.models.checkpoint import STATE_FILE, STUDENT_FILE, save_student
from raydistill.models.hubert import HubertModel, MaskedPredictor, compute_span_mask
from raydistill.train.data import TrainData

Report = Callable[[dict, Optional[Path]], None]
Evaluate = Callable[[HubertModel, bool], dict]


class Diverged(RuntimeError):
    """The loss became NaN or infinite."""


def lr_lambda(step: int, warmup: int, total: int) -> float:
    """Linear warm-up to 1, then linear decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def train(
    config: TrainConfig,
    data: TrainData,
    *,
    report: Report,
    checkpoint_dir: Path,
    evaluate: Optional[Evaluate] = None,
    resume: Optional[Path] = None,
    teacher: Optional[dict] = None,
    device: str | torch.device = "cpu",
) -> dict:
    """Train a student; return the last metrics.

    Args:
        config: the run's configuration.
        data: training split with its cached targets.
        report: called at every evaluation point with the metrics and (rank 0) a directory
            holding ``student.pt`` and ``trainer_state.pt``.
        checkpoint_dir: where rank 0 writes checkpoints (overwritten at each evaluation).
        evaluate: scores the frozen student; ``final`` is True at the last step. Rank 0 only.
        resume: a checkpoint directory to continue from (same config).
        teacher: description of the targets' teacher, stored in the checkpoint.
        device: where to train.
    """
    device = torch.device(device)
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    opt = config.optim
    torch.manual_seed(config.seed)  # identical init on every rank
    module = MaskedPredictor(config.student, data.num_classes, config.final_dim).to(device)
    optimizer = torch.optim.AdamW(
        module.parameters(), lr=opt.lr, betas=opt.betas, eps=opt.eps, weight_decay=opt.weight_decay,
        fused=device.type == "cuda",
    )
    warmup = max(1, int(opt.warmup_frac * opt.max_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_lambda(s, warmup, opt.max_steps))
    step = 0
    if resume is not None:
        state = torch.load(Path(resume) / STATE_FILE, map_location=device, weights_only=True)
        module.load_state_dict(state["module"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = int(state["step"])
    trained = nn.parallel.DistributedDataParallel(module) if world > 1 else module
    centroids = data.centroids.to(device) if data.centroids is not None else None
    checkpoint_dir = Path(checkpoint_dir)
    mask_rng = torch.Generator().manual_seed(config.seed * 1000 + rank + 7919 * step)

    batches = data.iterate(opt.batch_seconds, opt.max_seconds, seed=config.seed, start_step=step, rank=rank, world=world)
    window = _Window()
    metrics: dict = {}
    module.train()
    while step < opt.max_steps:
        started = time.perf_counter()
        batch = next(batches)
        wave = batch.wave.to(device, non_blocking=True)
        frames = batch.labels.shape[1]
        mask = compute_span_mask([frames] * wave.shape[0], frames, config.mask.prob, config.mask.length,
                                 min_masks=config.mask.min_masks, generator=mask_rng).to(device)
        out = trained(wave, mask, opt.feature_grad_mult)
        last = out.states[-1]
        extra: dict[str, float] = {}
        labels = batch.labels.to(device)
        features = batch.features.to(device) if data.soft else None
        logits, targets = _predict(module.head, last, mask, labels, features, centroids, config.targets.temperature)
        loss_sum = masked_prediction_loss(logits, targets)
        # Normalise by the masked frames of *all* ranks: DDP averages gradients over ranks,
        # so each rank scales its sum by world / global count to get the global mean.
        count = mask.sum().float()
        loss = loss_sum * world / _all_reduced(count, world) + config.feature_pen_weight * out.features_pen
        if config.nomask_weight > 0:
            nomask_logits, nomask_targets = _predict(module.head, last, ~mask, labels, features, centroids,
                                                     config.targets.temperature)
            nomask_sum = masked_prediction_loss(nomask_logits, nomask_targets)
            nomask_count = (~mask).sum().float()
            loss = loss + config.nomask_weight * nomask_sum * world / _all_reduced(nomask_count, world)
            extra["nomask_loss"] = (nomask_sum / nomask_count).item()
        if not torch.isfinite(loss):
            raise Diverged(f"loss became {loss.item()} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(module.parameters(), opt.grad_clip)
        optimizer.step()
        scheduler.step()
        step += 1
        window.add(
            loss=loss.item(), masked_loss=(loss_sum / count).item(),
            unit_acc=(unit_accuracy(logits.detach(), targets) / count).item(), grad_norm=float(grad_norm),
            audio_seconds=batch.seconds, seconds=time.perf_counter() - started, **extra,
        )
        if step % config.eval_every == 0 or step == opt.max_steps:
            metrics = window.summary(step, scheduler.get_last_lr()[0])
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
    return metrics


def _predict(head, hidden, select, labels, features, centroids, temperature):
    """Logits and targets of the selected frames: hard unit ids, or soft labels from teacher features."""
    logits = head(hidden[select])
    if features is None:
        return logits, labels[select]
    return logits, soft_unit_labels(features[select], centroids, temperature)


def _all_reduced(count: torch.Tensor, world: int) -> torch.Tensor:
    total = count.detach().clone()
    if world > 1:
        dist.all_reduce(total)
    return total


def _checkpoint(directory: Path, config, module, optimizer, scheduler, step, teacher) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    save_student(directory / STUDENT_FILE, config, module, teacher or {})
    torch.save(
        {"module": module.state_dict(), "optimizer": optimizer.state_dict(),
         "scheduler": scheduler.state_dict(), "step": step},
        directory / STATE_FILE,
    )
    return directory


class _Window:
    """Running means of the training metrics since the last report."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.n = 0
        self.seconds = self.audio_seconds = 0.0  # this window
        self.train_seconds = 0.0  # whole run: time spent inside training steps

    def add(self, seconds: float, audio_seconds: float, **values: float) -> None:
        self.n += 1
        self.seconds += seconds
        self.audio_seconds += audio_seconds
        self.train_seconds += seconds
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v

    def summary(self, step: int, lr: float) -> dict:
        out = {k: v / self.n for k, v in self.sums.items()}
        out.update(step=step, lr=lr, train_seconds=self.train_seconds,
                   audio_seconds_per_second=self.audio_seconds / max(self.seconds, 1e-9))
        self.sums, self.n, self.seconds, self.audio_seconds = {}, 0, 0.0, 0.0
        return out

"""Score an upstream SUPERB-style: budgets, data subsets, and :func:`evaluate_upstream`.

Features are extracted once per evaluation and shared by every task; each task picks the
utterances it can use (PR: those with phones; SID: seen speakers) from the same subsets.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from typing import Callable, Sequence

import numpy as np

from raydistill.corpus.manifest import Corpus, Utterance
from raydistill.errors import UserError
from raydistill.evaluate.probes import train_pr_probe, train_sid_probe
from raydistill.evaluate.upstream import Upstream, extract_features


@dataclass(frozen=True)
class EvalBudget:
    """How much data and how many probe steps one evaluation spends.

    Only the size differs from SUPERB: heads, optimiser and dev-based selection are the same.
    """

    name: str
    train_utts: int  # drawn from split "train" (shared by PR and SID), stratified by speaker
    dev_utts: int  # from split "dev": model selection
    test_utts: int  # from split "test": the reported numbers
    pr_steps: int  # Adam steps of the PR probe (SUPERB: 100k)
    pr_batch_size: int  # utterances per PR step (SUPERB: 16 × grad-accum 2)
    pr_lr: float  # SUPERB: 1e-2
    pr_eval_every: int  # steps between dev PER checks
    sid_steps: int  # full-batch Adam steps on pooled features
    sid_lr: float  # SUPERB 1e-4 on 200k small-batch steps; full-batch needs more
    sid_eval_every: int
    batch_seconds: float = 60.0  # padded audio per feature-extraction batch

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "name" and not value > 0:
                raise UserError(f"eval budget {self.name!r}: {f.name} must be > 0, found {value}")

    # Learning rates were chosen on the espeak default corpus (1.4 h, 48 seen speakers) with
    # FBank, the slowest-learning upstream. PR (Adam, 150-600 steps): 5e-3 is best for the
    # short probe (1e-3-2e-3 are still inserting phones, PER > 100 %; 1e-2-3e-2 stall at
    # 85-95 %) and within 2 points of the best (2e-3) at 500 steps. SID (full batch): 1e-3
    # (ARMHuBERT's 10 x SUPERB) is as good as or better than 3e-3-3e-2.

    @classmethod
    def smoke(cls) -> "EvalBudget":
        """Tiny, for tests and ``--smoke-test`` runs: seconds, numbers only sanity-level."""
        return cls(
            name="smoke", train_utts=48, dev_utts=16, test_utts=16,
            pr_steps=60, pr_batch_size=8, pr_lr=5e-3, pr_eval_every=20,
            sid_steps=60, sid_lr=1e-3, sid_eval_every=10,
        )

    @classmethod
    def probe(cls) -> "EvalBudget":
        """Cheap score at every ASHA rung during training (≈ 15–25 s for a small upstream).

        Batch 32: by 250 steps the dev PER already orders a pretrained teacher (79 %) well
        apart from a random-init model (94 %); 150 steps of batch 8 did not.
        """
        return cls(
            name="probe", train_utts=400, dev_utts=100, test_utts=100,
            pr_steps=250, pr_batch_size=32, pr_lr=5e-3, pr_eval_every=125,
            sid_steps=200, sid_lr=1e-3, sid_eval_every=10,
        )

    @classmethod
    def full(cls) -> "EvalBudget":
        """End-of-trial score (≈ 1–1.5 min for a small upstream): PER near convergence of the
        linear probe (measured: 2000 steps gain < 2 points over 1000)."""
        return cls(
            name="full", train_utts=800, dev_utts=150, test_utts=200,
            pr_steps=1000, pr_batch_size=32, pr_lr=5e-3, pr_eval_every=250,
            sid_steps=400, sid_lr=1e-3, sid_eval_every=10,
        )

    @classmethod
    def named(cls, name: str) -> "EvalBudget":
        presets: dict[str, Callable[[], EvalBudget]] = {
            "smoke": cls.smoke, "probe": cls.probe, "full": cls.full,
        }
        if name not in presets:
            raise UserError(f"unknown eval budget {name!r}; choose one of {sorted(presets)}")
        return presets[name]()


# Which metrics feed ``overall_score`` and how (SUPERB.md §3.1, the ARMHuBERT/STaR "Overall"):
# error rates enter as 100 − x, accuracies and F1 as x, MTWV (in [0, 1]) as 100·x. The score is
# the mean over the metrics present, so a task that was not run is left out.
OVERALL_SCORE_METRICS: dict[str, str] = {
    "pr_per": "error",
    "sid_acc": "accuracy",
}
_AS_SCORE: dict[str, Callable[[float], float]] = {
    "error": lambda x: 100.0 - x,
    "accuracy": lambda x: x,
    "mtwv": lambda x: 100.0 * x,
}


def overall_score(metrics: dict) -> float:
    """Mean of the :data:`OVERALL_SCORE_METRICS` present in ``metrics`` (NaN if none)."""
    parts = [_AS_SCORE[kind](metrics[key]) for key, kind in OVERALL_SCORE_METRICS.items() if key in metrics]
    return float(np.mean(parts)) if parts else float("nan")


def stratified_subset(utterances: Sequence[Utterance], n: int, seed: int) -> list[Utterance]:
    """Up to ``n`` utterances, taking speakers in turn so every speaker is represented once
    ``n`` ≥ the number of speakers (SID must see each seen speaker in train).

    Speaker order and each speaker's utterances are shuffled by ``seed``; the result is in
    corpus order.
    """
    rng = np.random.default_rng(seed)
    by_speaker: dict[str, list[int]] = {}
    for i, u in enumerate(utterances):
        by_speaker.setdefault(u.speaker, []).append(i)
    queues = [rng.permutation(by_speaker[s]).tolist() for s in sorted(by_speaker)]
    speaker_rank = rng.permutation(len(queues))
    # round robin: every speaker's 1st utterance, then every speaker's 2nd, ...
    turns = sorted((k, speaker_rank[s], i) for s, q in enumerate(queues) for k, i in enumerate(q))
    return [utterances[i] for i in sorted(i for _, _, i in turns[:n])]


def evaluate_upstream(
    upstream: Upstream,
    corpus: Corpus,
    budget: EvalBudget,
    *,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = False,
) -> dict:
    """Extract features once, run every task the corpus supports, and score the upstream.

    Returns a flat dict (loggable as metrics): per task its test metric, best dev metric,
    best step, learned layer weights and utterance counts (``pr_*``: PER in %; ``sid_*``:
    accuracy in %), plus ``overall_score``, utterance counts, ``eval_seconds`` and
    ``extract_seconds``. A task without usable data (no phones, < 2 seen speakers) is skipped
    and its keys are absent.
    """
    start = time.perf_counter()
    sizes = {"train": budget.train_utts, "dev": budget.dev_utts, "test": budget.test_utts}
    subsets = {
        split: stratified_subset(
            [u for u in corpus.split(split) if u.kind != "silence"], n, seed + k
        )
        for k, (split, n) in enumerate(sizes.items())
    }
    everything = [u for split in sizes for u in subsets[split]]
    feats = extract_features(
        upstream, corpus, everything, device=device,
        batch_seconds=budget.batch_seconds, progress=progress,
    )
    feature = iter(feats)
    data = {split: [(u, next(feature)) for u in subsets[split]] for split in sizes}
    results: dict = {f"{split}_utts": len(data[split]) for split in sizes}
    results["audio_seconds"] = sum(u.seconds for u in everything)
    results["extract_seconds"] = time.perf_counter() - start
    results |= _phone_recognition(corpus, data, budget, seed, device)
    results |= _speaker_identification(data, budget, seed, device)
    if not any(key in results for key in OVERALL_SCORE_METRICS):
        raise UserError(
            f"corpus {corpus.name} supports no evaluation task: it needs phones (PR) or "
            "at least 2 seen speakers with train and dev audio (SID)"
        )
    results["overall_score"] = overall_score(results)
    results["eval_seconds"] = time.perf_counter() - start
    return results


def _phone_recognition(corpus: Corpus, data: dict, budget: EvalBudget, seed: int, device: str) -> dict:
    """PR on the utterances with a non-empty phone sequence; {} if train or dev has none."""
    phone_id = {p: i + 1 for i, p in enumerate(corpus.phones)}  # 0 is the CTC blank
    splits = {}
    for split, pairs in data.items():
        pairs = [(u, f) for u, f in pairs if u.phones]
        unknown = {p for u, _ in pairs for p in u.phones} - set(phone_id)
        if unknown:
            raise UserError(f"corpus {corpus.name}: phones {sorted(unknown)} are not in its inventory")
        splits[split] = ([f for _, f in pairs], [[phone_id[p] for p in u.phones] for u, _ in pairs])
    if not splits["train"][0] or not splits["dev"][0]:
        return {}
    start = time.perf_counter()
    out = train_pr_probe(
        splits["train"], splits["dev"], splits["test"], num_phones=len(phone_id),
        steps=budget.pr_steps, batch_size=budget.pr_batch_size, lr=budget.pr_lr,
        eval_every=budget.pr_eval_every, seed=seed, device=device,
    )
    return {
        "pr_per": out["per"], "pr_per_dev": out["per_dev"], "pr_best_step": out["best_step"],
        "pr_layer_weights": out["layer_weights"], "pr_seconds": time.perf_counter() - start,
        **{f"pr_{split}_utts": len(x) for split, (x, _) in splits.items()},
    }


def _speaker_identification(data: dict, budget: EvalBudget, seed: int, device: str) -> dict:
    """Closed-set SID over the seen speakers of the train subset; {} if < 2 or no dev audio."""
    speakers = sorted({u.speaker for u, _ in data["train"] if u.speaker_pool == "seen"})
    label = {s: i for i, s in enumerate(speakers)}
    splits = {}
    for split, pairs in data.items():
        pairs = [(u, f) for u, f in pairs if u.speaker_pool == "seen" and u.speaker in label]
        # mean over frames before the (linear) head: see SIDHead
        pooled = np.stack([f.astype(np.float32).mean(0) for _, f in pairs]) if pairs else np.zeros((0, 1, 1))
        splits[split] = (pooled, [label[u.speaker] for u, _ in pairs])
    if len(speakers) < 2 or not splits["dev"][1]:
        return {}
    start = time.perf_counter()
    out = train_sid_probe(
        splits["train"], splits["dev"], splits["test"], num_classes=len(speakers),
        steps=budget.sid_steps, lr=budget.sid_lr, eval_every=budget.sid_eval_every, seed=seed,
        device=device,
    )
    return {
        "sid_acc": out["acc"], "sid_acc_dev": out["acc_dev"], "sid_best_step": out["best_step"],
        "sid_layer_weights": out["layer_weights"], "sid_seconds": time.perf_counter() - start,
        "sid_speakers": len(speakers),
        **{f"sid_{split}_utts": len(y) for split, (_, y) in splits.items()},
    }

"""Score an upstream SUPERB-style: budgets, data subsets, and :func:`evaluate_upstream`.

Seven tasks, each on the utterances of the corpus that carry its labels:

| task | utterances (train / dev / test) | head | metric |
|---|---|---|---|
| PR | any with phones (shared subset) | linear CTC | ``pr_per`` |
| SID | seen speakers (shared subset) | mean-pool + linear | ``sid_acc`` |
| KS | keyword and silence clips | mean-pool + linear, 12 classes | ``ks_acc`` |
| IC | commands | mean-pool + linear, 3 slots, all must be right | ``ic_acc`` |
| ASR | sentences | BiLSTM character CTC | ``asr_wer`` |
| ASV | seen speakers / unseen dev / unseen test speakers | x-vector, AM-softmax, cosine | ``asv_eer`` |
| QbE | keyword clips as queries, sentences and commands as documents | none (DTW) | ``qbe_map`` |

Features are extracted once per evaluation, for the union of every task's utterances, and
shared by all tasks. A task whose labels the corpus lacks is skipped and its keys are absent.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, fields
from typing import Callable, Optional, Sequence

import numpy as np

from raydistill.corpus.manifest import Corpus, Utterance
from raydistill.corpus.text import SILENCE, UNKNOWN
from raydistill.errors import UserError
from raydistill.evaluate.probes import train_asr_probe, train_pr_probe, train_utterance_probe
from raydistill.evaluate.qbe import MIN_QUERY_FRAMES, run_qbe, speech_span
from raydistill.evaluate.speaker import train_asv_probe
from raydistill.evaluate.upstream import Upstream, extract_features
from raydistill.utils import log

TASKS = ("pr", "sid", "ks", "ic", "asr", "asv", "qbe")
PROBE_TASKS = ("pr", "sid")  # what the cheap evaluation at every ASHA rung runs


@dataclass(frozen=True)
class EvalBudget:
    """How much data and how many probe steps one evaluation spends, and which tasks it runs.

    Only the size differs from SUPERB: heads, optimisers and dev-based selection are the same.
    ``train_utts`` / ``dev_utts`` / ``test_utts`` cap every task's utterances per split (PR and
    SID share one speaker-stratified subset of that size; the other tasks draw their own).
    """

    name: str
    train_utts: int  # drawn from split "train", stratified by speaker
    dev_utts: int  # from split "dev": model selection
    test_utts: int  # from split "test": the reported numbers
    pr_steps: int  # Adam steps of the PR probe (SUPERB: 100k)
    pr_batch_size: int  # utterances per PR step (SUPERB: 16 × grad-accum 2)
    pr_lr: float  # SUPERB: 1e-2
    pr_eval_every: int  # steps between dev PER checks
    sid_steps: int  # full-batch Adam steps on pooled features (also KS and IC)
    sid_lr: float  # SUPERB 1e-4 on 200k small-batch steps; full-batch needs more
    sid_eval_every: int
    batch_seconds: float = 60.0  # padded audio per feature-extraction batch
    tasks: tuple[str, ...] = TASKS
    asr_steps: int = 400  # SUPERB: 200k steps of batch 32
    asr_batch_size: int = 16
    asr_lr: float = 3e-3  # SUPERB 1e-4 for its 2 × 1024 BiLSTM over 200k steps
    asr_eval_every: int = 100
    asr_hidden: int = 128  # BiLSTM size per direction (SUPERB: 2 layers of 1024)
    asv_steps: int = 300  # SUPERB: 200k steps of batch 50
    asv_batch_size: int = 32
    asv_crop_frames: int = 100  # 2 s training crops (SUPERB: up to 8 s)
    asv_lr: float = 1e-3  # AdamW; SUPERB 1e-4
    asv_eval_every: int = 50
    # SUPERB tunes only the learning rate, per upstream and task, on dev: every trained head is
    # trained at each lr × scale and the one with the best dev metric is reported. (1.0,) uses
    # the fixed learning rates above (chosen once on the embedded corpus): a third of the cost.
    lr_scales: tuple[float, ...] = (1.0,)

    def __post_init__(self):
        object.__setattr__(self, "lr_scales", tuple(float(x) for x in self.lr_scales))
        if not self.lr_scales or any(not x > 0 for x in self.lr_scales):
            raise UserError(f"eval budget {self.name!r}: lr_scales must be positive numbers, found {self.lr_scales}")
        unknown = sorted(set(self.tasks) - set(TASKS))
        if unknown or not self.tasks:
            raise UserError(f"eval budget {self.name!r}: unknown tasks {unknown or '(none given)'}; "
                            f"choose from {', '.join(TASKS)}")
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name not in ("name", "tasks", "lr_scales") and not value > 0:
                raise UserError(f"eval budget {self.name!r}: {f.name} must be > 0, found {value}")

    # Learning rates were chosen on the espeak default corpus (1.4 h, 48 seen speakers) with
    # FBank, the slowest-learning upstream. PR (Adam, 150-600 steps): 5e-3 is best for the
    # short probe (1e-3-2e-3 are still inserting phones, PER > 100 %; 1e-2-3e-2 stall at
    # 85-95 %) and within 2 points of the best (2e-3) at 500 steps. SID (full batch): 1e-3
    # (ARMHuBERT's 10 x SUPERB) is as good as or better than 3e-3-3e-2.

    def with_tasks(self, tasks) -> "EvalBudget":
        """The same budget restricted to ``tasks`` (names from :data:`TASKS`)."""
        return dataclasses.replace(self, tasks=tuple(tasks))

    def with_lr_scales(self, scales) -> "EvalBudget":
        """The same budget with every head's learning rate tuned on dev over ``lr × scales``."""
        return dataclasses.replace(self, lr_scales=tuple(scales))

    @classmethod
    def smoke(cls) -> "EvalBudget":
        """Tiny, for tests and ``--smoke`` runs: seconds, numbers only sanity-level."""
        return cls(
            name="smoke", train_utts=48, dev_utts=16, test_utts=16,
            pr_steps=60, pr_batch_size=8, pr_lr=5e-3, pr_eval_every=20,
            sid_steps=60, sid_lr=1e-3, sid_eval_every=10,
            asr_steps=10, asr_batch_size=4, asr_eval_every=10, asr_hidden=32,
            asv_steps=10, asv_batch_size=8, asv_eval_every=10,
        )

    @classmethod
    def probe(cls) -> "EvalBudget":
        """Cheap score at every ASHA rung during training (≈ 15–25 s for a small upstream): PR
        and SID only.

        Batch 32: by 250 steps the dev PER already orders a pretrained teacher (79 %) well
        apart from a random-init model (94 %); 150 steps of batch 8 did not.
        """
        return cls(
            name="probe", train_utts=400, dev_utts=100, test_utts=100,
            pr_steps=250, pr_batch_size=32, pr_lr=5e-3, pr_eval_every=125,
            sid_steps=200, sid_lr=1e-3, sid_eval_every=10, tasks=PROBE_TASKS,
        )

    @classmethod
    def full(cls) -> "EvalBudget":
        """End-of-trial score, every task: PER near convergence of the linear probe (measured:
        2000 steps gain < 2 points over 1000)."""
        return cls(
            name="full", train_utts=800, dev_utts=150, test_utts=200,
            pr_steps=1000, pr_batch_size=32, pr_lr=5e-3, pr_eval_every=250,
            sid_steps=400, sid_lr=1e-3, sid_eval_every=10,
        )

    @classmethod
    def named(cls, name: str) -> "EvalBudget":
        """A budget by name, optionally restricted to some tasks: ``full``, ``full:pr,sid,asr``."""
        name, _, tasks = name.partition(":")
        if tasks:
            unknown = [t for t in tasks.split(",") if t not in TASKS]
            if unknown:
                raise UserError(f"unknown evaluation task(s) {', '.join(unknown)}; choose from {', '.join(TASKS)}")
            return cls.named(name).with_tasks(tasks.split(","))
        presets: dict[str, Callable[[], EvalBudget]] = {
            "smoke": cls.smoke, "probe": cls.probe, "full": cls.full,
        }
        if name not in presets:
            raise UserError(f"unknown eval budget {name!r}; choose one of {sorted(presets)}")
        return presets[name]()


# Which metrics feed ``overall_score`` and how (the ARMHuBERT/STaR "Overall";
# docs/evaluation.md#overall-score):
# error rates enter as 100 − x, accuracies and F1 as x, MTWV (in [0, 1]) as 100·x. The score is
# the mean over the metrics present, so a task that was not run is left out.
OVERALL_SCORE_METRICS: dict[str, str] = {
    "pr_per": "error",
    "asr_wer": "error",
    "ks_acc": "accuracy",
    "qbe_map": "accuracy",  # MAP in %, in place of MTWV (evaluate/qbe.py)
    "sid_acc": "accuracy",
    "asv_eer": "error",
    "ic_acc": "accuracy",
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


# What every full evaluation leaves in MLflow: each task's test metric, its best dev metric, the
# two aggregates and the time spent (see :func:`score_metrics`).
SCORE_METRICS: tuple[str, ...] = (
    "overall_score", "superb_score",
    *(k for key in OVERALL_SCORE_METRICS for k in (key, f"{key}_dev")),
    "eval_seconds",
)


def score_metrics(scores: dict, references: Optional[dict] = None) -> dict:
    """The :data:`SCORE_METRICS` of an evaluation's ``scores``, with ``superb_score`` when
    ``references`` holds the ``fbank`` and ``teacher`` scores of the same corpus and budget."""
    out = {k: float(scores[k]) for k in SCORE_METRICS if k in scores}
    if references and "fbank" in references and "teacher" in references:
        out["superb_score"] = superb_score(scores, references["fbank"], references["teacher"])
    return out


def superb_score(metrics: dict, fbank: dict, reference: dict) -> float:
    """SUPERB score (docs/evaluation.md#superb-score): every task's metric mapped linearly so
    that FBank scores 0 and the reference (here: the teacher, on the same corpus and budget) 1000,
    then averaged over the tasks present in all three. Metrics are compared as scores (error
    rates as 100 − x), and a task on which the reference does not beat FBank is left out: its
    scale would be empty or reversed (SUPERB's reference is the best model per task, so this
    never happens there). NaN if no task is left."""
    parts = []
    for key, kind in OVERALL_SCORE_METRICS.items():
        if key in metrics and key in fbank and key in reference:
            x, f, r = (_AS_SCORE[kind](d[key]) for d in (metrics, fbank, reference))
            if r > f:
                parts.append((x - f) / (r - f))
    return 1000.0 * float(np.mean(parts)) if parts else float("nan")


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


def task_utterances(corpus: Corpus, budget: EvalBudget, seed: int) -> dict[str, dict[str, list[Utterance]]]:
    """{task: {split: utterances}} for the tasks of ``budget``, each capped per split.

    PR and SID share one speaker-stratified subset of the non-silence utterances (the cap is
    per split); every other task draws its own subset of the utterances that carry its labels.
    """
    caps = {"train": budget.train_utts, "dev": budget.dev_utts, "test": budget.test_utts}
    speech = lambda u: u.kind != "silence"  # noqa: E731
    wanted: dict[str, Callable[[Utterance, str], bool]] = {
        "ks": lambda u, split: u.keyword is not None,
        "ic": lambda u, split: u.intent is not None,
        "asr": lambda u, split: u.kind == "sentence" and bool(u.text),
        # verification: trained on seen speakers, scored on pairs of unseen speakers
        "asv": lambda u, split: speech(u) and u.speaker_pool == ("seen" if split == "train" else "unseen"),
        "qbe": lambda u, split: split != "train" and (
            u.kind in ("sentence", "command") or (u.keyword is not None and u.keyword not in (UNKNOWN, SILENCE))),
    }
    out: dict[str, dict[str, list[Utterance]]] = {}
    shared = {split: stratified_subset([u for u in corpus.split(split) if speech(u)], n, seed + k)
              for k, (split, n) in enumerate(caps.items())}
    for task in budget.tasks:
        if task in ("pr", "sid"):
            out[task] = shared
            continue
        keep = wanted[task]
        out[task] = {}
        for k, (split, n) in enumerate(caps.items()):
            pool = [u for u in corpus.split(split) if keep(u, split)]
            if task == "qbe":  # queries are not capped; documents are
                queries = [u for u in pool if u.kind == "keyword"]
                pool = queries + stratified_subset([u for u in pool if u.kind != "keyword"], n, seed + 10 * k)
                out[task][split] = pool
            else:
                out[task][split] = stratified_subset(pool, n, seed + 10 * k + TASKS.index(task))
    return out


def evaluate_upstream(
    upstream: Upstream,
    corpus: Corpus,
    budget: EvalBudget,
    *,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = False,
) -> dict:
    """Extract features once, run every task of ``budget`` the corpus supports, and score.

    Returns a flat dict (loggable as metrics): per task its test metric, best dev metric,
    best step (or layer), learned layer weights, utterance counts and seconds (``pr_*``: PER
    in %; ``sid_*``, ``ks_*``, ``ic_*``: accuracy in %; ``asr_*``: WER in %; ``asv_*``: EER in
    %; ``qbe_*``: MAP in %), plus ``overall_score``, ``train_utts``/``dev_utts``/``test_utts``
    (the shared PR/SID subset), ``audio_seconds``, ``eval_seconds`` and ``extract_seconds``.
    A task without usable data (no phones, < 2 seen speakers, no keywords …) is skipped and
    its keys are absent.
    """
    start = time.perf_counter()
    subsets = task_utterances(corpus, budget, seed)
    unique: dict[str, Utterance] = {}
    for splits in subsets.values():
        for utts in splits.values():
            unique.update((u.id, u) for u in utts)
    everything = list(unique.values())
    feats = dict(zip(unique, extract_features(
        upstream, corpus, everything, device=device, batch_seconds=budget.batch_seconds, progress=progress,
    )))
    data = {task: {split: [(u, feats[u.id]) for u in utts] for split, utts in splits.items()}
            for task, splits in subsets.items()}
    shared = next(iter(subsets.values()))
    results: dict = {f"{split}_utts": len(utts) for split, utts in (subsets.get("pr") or shared).items()}
    results["audio_seconds"] = sum(u.seconds for u in everything)
    results["extract_seconds"] = time.perf_counter() - start
    runners = {"pr": lambda d: _phone_recognition(corpus, d, budget, seed, device),
               "sid": lambda d: _speaker_identification(d, budget, seed, device),
               "ks": lambda d: _keyword_spotting(d, budget, seed, device),
               "ic": lambda d: _intent_classification(d, budget, seed, device),
               "asr": lambda d: _speech_recognition(d, budget, seed, device),
               "asv": lambda d: _speaker_verification(d, budget, seed, device),
               "qbe": lambda d: _query_by_example(corpus, d, upstream.num_states)}
    for i, task in enumerate(budget.tasks, 1):
        task_start = time.perf_counter()
        out = runners[task](data[task])
        if out:
            results |= out
            results[f"{task}_seconds"] = time.perf_counter() - task_start
        if progress:
            log(f"  {upstream.name}: task {i}/{len(budget.tasks)} {task} "
                + (f"done in {results[f'{task}_seconds']:.0f}s" if out else "skipped (no data for it)"))
    if not any(key in results for key in OVERALL_SCORE_METRICS):
        raise UserError(
            f"corpus {corpus.name} supports none of the tasks {', '.join(budget.tasks)}: e.g. PR needs "
            "phones, SID at least 2 seen speakers with train and dev audio"
        )
    results["overall_score"] = overall_score(results)
    results["eval_seconds"] = time.perf_counter() - start
    return results


def _tune_lr(train: Callable[[float], dict], lr: float, budget: EvalBudget, dev_key: str, *,
             lower_is_better: bool) -> dict:
    """Train a head at ``lr × scale`` for every scale of the budget; the run with the best dev
    metric (the first on ties), with its learning rate as ``lr``."""
    best = None
    for scale in budget.lr_scales:
        out = {**train(lr * scale), "lr": lr * scale}
        if best is None or (out[dev_key] < best[dev_key] if lower_is_better else out[dev_key] > best[dev_key]):
            best = out
    return best


def _counts(task: str, splits: dict) -> dict:
    return {f"{task}_{split}_utts": len(y) for split, (_, y) in splits.items()}


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
    out = _tune_lr(lambda lr: train_pr_probe(
        splits["train"], splits["dev"], splits["test"], num_phones=len(phone_id),
        steps=budget.pr_steps, batch_size=budget.pr_batch_size, lr=lr,
        eval_every=budget.pr_eval_every, seed=seed, device=device,
    ), budget.pr_lr, budget, "per_dev", lower_is_better=True)
    return {
        "pr_per": out["per"], "pr_per_dev": out["per_dev"], "pr_best_step": out["best_step"],
        "pr_layer_weights": out["layer_weights"], "pr_lr": out["lr"], **_counts("pr", splits),
    }


def _pooled(pairs) -> np.ndarray:
    # mean over frames before the (linear) head: see SIDHead
    return np.stack([f.astype(np.float32).mean(0) for _, f in pairs]) if pairs else np.zeros((0, 1, 1))


def _utterance_task(task: str, data: dict, labels: Callable[[Utterance], Optional[tuple]], budget: EvalBudget,
                    seed: int, device: str, *, extra: Optional[dict] = None) -> dict:
    """An utterance-level classification task (SID, KS, IC): classes of each slot taken from the
    train split; dev/test utterances of a class train never saw are left out. {} if train has
    fewer than 2 classes or dev has no utterance."""
    train_labels = [labels(u) for u, _ in data["train"]]
    train_labels = [y for y in train_labels if y is not None]
    if not train_labels:
        return {}
    vocab = [sorted({y[k] for y in train_labels}) for k in range(len(train_labels[0]))]
    index = [{v: i for i, v in enumerate(values)} for values in vocab]
    splits = {}
    for split, pairs in data.items():
        pairs = [(u, f) for u, f in pairs if labels(u) is not None
                 and all(v in index[k] for k, v in enumerate(labels(u)))]
        splits[split] = (_pooled(pairs), [[index[k][v] for k, v in enumerate(labels(u))] for u, _ in pairs])
    if max(len(v) for v in vocab) < 2 or not splits["dev"][1]:
        return {}
    out = _tune_lr(lambda lr: train_utterance_probe(
        splits["train"], splits["dev"], splits["test"], slots=[len(v) for v in vocab],
        steps=budget.sid_steps, lr=lr, eval_every=budget.sid_eval_every, seed=seed, device=device,
    ), budget.sid_lr, budget, "acc_dev", lower_is_better=False)
    return {
        f"{task}_acc": out["acc"], f"{task}_acc_dev": out["acc_dev"], f"{task}_best_step": out["best_step"],
        f"{task}_layer_weights": out["layer_weights"], f"{task}_lr": out["lr"],
        f"{task}_classes": sum(len(v) for v in vocab),
        **_counts(task, splits), **(extra or {}),
    }


def _speaker_identification(data: dict, budget: EvalBudget, seed: int, device: str) -> dict:
    """Closed-set SID over the seen speakers of the train subset; {} if < 2 or no dev audio."""
    out = _utterance_task("sid", data, lambda u: (u.speaker,) if u.speaker_pool == "seen" else None,
                          budget, seed, device)
    if out:
        out["sid_speakers"] = out.pop("sid_classes")
    return out


def _keyword_spotting(data: dict, budget: EvalBudget, seed: int, device: str) -> dict:
    """KS: the 12 Speech Commands classes, ``_unknown_`` and ``_silence_`` included."""
    return _utterance_task("ks", data, lambda u: (u.keyword,) if u.keyword is not None else None,
                           budget, seed, device)


def _intent_classification(data: dict, budget: EvalBudget, seed: int, device: str) -> dict:
    """IC: (action, object, location), right only if all three slots are."""
    slots = ("action", "object", "location")
    return _utterance_task("ic", data, lambda u: tuple(u.intent[s] for s in slots) if u.intent else None,
                           budget, seed, device)


def _speech_recognition(data: dict, budget: EvalBudget, seed: int, device: str) -> dict:
    """ASR: character CTC on the sentences, WER; {} if train or dev has none."""
    splits = {split: ([f for _, f in pairs], [u.text for u, _ in pairs]) for split, pairs in data.items()}
    if not splits["train"][0] or not splits["dev"][0] or not splits["test"][0]:
        return {}
    out = _tune_lr(lambda lr: train_asr_probe(
        splits["train"], splits["dev"], splits["test"], steps=budget.asr_steps, batch_size=budget.asr_batch_size,
        lr=lr, eval_every=budget.asr_eval_every, hidden=budget.asr_hidden, seed=seed, device=device,
    ), budget.asr_lr, budget, "wer_dev", lower_is_better=True)
    return {"asr_wer": out["wer"], "asr_wer_dev": out["wer_dev"], "asr_best_step": out["best_step"],
            "asr_layer_weights": out["layer_weights"], "asr_lr": out["lr"], **_counts("asr", splits)}


def _speaker_verification(data: dict, budget: EvalBudget, seed: int, device: str) -> dict:
    """ASV: x-vector head on seen speakers, EER on pairs of unseen speakers; {} unless train
    and both dev and test have at least 2 speakers."""
    splits = {split: ([f for _, f in pairs], [u.speaker for u, _ in pairs]) for split, pairs in data.items()}
    if any(len(set(spk)) < 2 for _, spk in splits.values()):
        return {}
    out = _tune_lr(lambda lr: train_asv_probe(
        splits["train"], splits["dev"], splits["test"], steps=budget.asv_steps, batch_size=budget.asv_batch_size,
        crop_frames=budget.asv_crop_frames, lr=lr, eval_every=budget.asv_eval_every, seed=seed,
        device=device,
    ), budget.asv_lr, budget, "eer_dev", lower_is_better=True)
    return {"asv_eer": out["eer"], "asv_eer_dev": out["eer_dev"], "asv_best_step": out["best_step"],
            "asv_layer_weights": out["layer_weights"], "asv_lr": out["lr"], **_counts("asv", splits)}


def _query_by_example(corpus: Corpus, data: dict, num_states: int) -> dict:
    """QbE: keyword clips (trimmed to their speech) against sentences and commands; {} unless dev
    and test both have a query with a relevant document."""
    splits = {}
    for split in ("dev", "test"):
        queries, words, docs, doc_words = [], [], [], []
        for u, f in data[split]:
            if u.kind == "keyword":
                first, last = speech_span(corpus.load_audio(u))
                q = f[first:last]
                if q.shape[0] >= MIN_QUERY_FRAMES:
                    queries.append(q)
                    words.append(u.keyword)
            else:
                docs.append(f)
                doc_words.append(set(u.text.split()))
        relevant = [w for w in words if any(w in d for d in doc_words)]
        if not relevant:
            return {}
        splits[split] = (queries, words, docs, doc_words)
    out = run_qbe(splits["dev"], splits["test"], num_states)
    return {"qbe_map": out["map"], "qbe_map_dev": out["map_dev"], "qbe_best_layer": out["best_layer"],
            **{f"qbe_{split}_queries": len(q) for split, (q, *_ ) in splits.items()},
            **{f"qbe_{split}_documents": len(d) for split, (_, _, d, _) in splits.items()}}

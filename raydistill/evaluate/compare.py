"""Does distillation do what it claims? Score several upstreams over several evaluation seeds
and check chosen claims "A beats B" with gaps larger than the seed spread.

``raydistill compare --checkpoint BEST`` judges what distillation claims: teacher > student
and student > random init of the same architecture. FBank is scored too, and its gaps to the
student and to random init are reported without a verdict: the SUPERB protocol does not
order random deep features against FBank (FBank is strong on frame-level and x-vector tasks,
random features on mean-pooled ones; on the real SUPERB FBank reaches 23.18 WER and 9.56 EER).
"""

from __future__ import annotations

import os
import time
from typing import Optional, Sequence

import numpy as np

from raydistill.corpus.manifest import Corpus
from raydistill.evaluate.suite import OVERALL_SCORE_METRICS, EvalBudget, evaluate_upstream, score_metrics
from raydistill.evaluate.upstream import Upstream
from raydistill.utils import log


def _score(upstream: Upstream, corpus: Corpus, budget: EvalBudget, seed: int, device: str,
           threads: int = 0) -> tuple[dict, float]:
    """One evaluation: its :func:`score_metrics` and seconds (``threads``: torch threads, 0 = as is)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    start = time.perf_counter()
    scores = score_metrics(evaluate_upstream(upstream, corpus, budget, seed=seed, device=device))
    return scores, time.perf_counter() - start


def compare_upstreams(upstreams: Sequence[Upstream], corpus: Corpus, budget: EvalBudget, seeds: Sequence[int], *,
                      metric: str = "overall_score", device: str = "cpu", progress: bool = True,
                      jobs: int = 1, claims: Optional[Sequence[tuple[str, str]]] = None,
                      unjudged: Sequence[tuple[str, str]] = ()) -> dict:
    """Score each upstream at every seed and judge the claims "A beats B" on ``metric``.

    ``jobs`` > 1 runs that many evaluations at once in separate processes (CPU: the cores
    split between them), which is faster than one evaluation on every core: the probes' small
    matrix products do not scale across threads. Each evaluation is seeded as in a sequential
    run; only the threads per evaluation differ, which can change float summation order.

    Returns:
        ``upstreams``: per upstream its ``scores`` (one :func:`score_metrics` dict per seed),
        ``mean`` and ``spread`` (max − min over seeds) of every task metric and the aggregates,
        and ``seconds`` per evaluation; ``claims``: for each (better, worse) pair of upstream
        names (default: each upstream against the next one), the ``gap`` mean(better) −
        mean(worse) of ``metric``, the ``spread`` (the larger of the two) and whether it
        ``holds`` (gap > spread); ``holds``: every claim holds; ``unjudged``: the same gaps for
        pairs reported without a verdict.
    """
    names = [u.name for u in upstreams]
    if claims is None:
        claims = list(zip(names, names[1:]))
    for pair in (*claims, *unjudged):
        if not set(pair) <= set(names):
            raise ValueError(f"compare: {pair} names an upstream that is not scored ({names})")
    runs = [(i, seed) for i in range(len(upstreams)) for seed in seeds]
    if jobs > 1 and len(runs) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        threads = max(1, (os.cpu_count() or 1) // jobs) if device == "cpu" else 0
        if progress:
            log(f"scoring {len(upstreams)} upstreams x {len(seeds)} seeds ({budget.name} suite), {jobs} at a time")
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(_score, upstreams[i], corpus, budget, seed, device, threads): n
                       for n, (i, seed) in enumerate(runs)}
            results = [None] * len(runs)
            for done, future in enumerate(as_completed(futures), 1):
                n = futures[future]
                results[n] = future.result()
                if progress:
                    (i, seed), (scores, seconds) = runs[n], results[n]
                    log(f"[{done}/{len(runs)}] {upstreams[i].name} seed {seed}: "
                        f"{metric} {scores.get(metric, float('nan')):.2f} in {seconds:.0f} s")
    else:
        results = []
        for i, seed in runs:
            if progress:
                log(f"scoring {upstreams[i].name} (seed {seed}, {budget.name} suite)")
            results.append(_score(upstreams[i], corpus, budget, seed, device))
    out = []
    for i, upstream in enumerate(upstreams):
        mine = [r for (j, _), r in zip(runs, results) if j == i]
        scores, seconds = [r[0] for r in mine], [r[1] for r in mine]
        keys = [k for k in (metric, "overall_score", *OVERALL_SCORE_METRICS) if all(k in s for s in scores)]
        keys = list(dict.fromkeys(keys))
        out.append({
            "name": upstream.name,
            "scores": scores,
            "mean": {k: float(np.mean([s[k] for s in scores])) for k in keys},
            "spread": {k: float(np.ptp([s[k] for s in scores])) for k in keys},
            "seconds": float(np.mean(seconds)),
        })
    by_name = {entry["name"]: entry for entry in out}

    def gap(better: str, worse: str) -> dict:
        a, b = by_name[better], by_name[worse]
        return {"between": [better, worse], "gap": a["mean"][metric] - b["mean"][metric],
                "spread": max(a["spread"][metric], b["spread"][metric])}

    judged = [(g := gap(*pair)) | {"holds": g["gap"] > g["spread"]} for pair in claims]
    return {"metric": metric, "seeds": list(seeds), "budget": budget.name, "lr_scales": list(budget.lr_scales),
            "jobs": jobs, "upstreams": out, "claims": judged, "holds": all(c["holds"] for c in judged),
            "unjudged": [gap(*pair) for pair in unjudged]}

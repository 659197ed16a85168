"""Is the evaluation discriminative? Score several upstreams over several evaluation seeds and
check that they come out in the expected order with gaps larger than the seed spread.

The reference order on the embedded default: teacher > distilled student > random-init student
(same architecture) > FBank (``raydistill compare --checkpoint BEST``).
"""

from __future__ import annotations

import os
import time
from typing import Sequence

import numpy as np

from raydistill.corpus.manifest import Corpus
from raydistill.evaluate.suite import OVERALL_SCORE_METRICS, EvalBudget, evaluate_upstream, score_metrics
from raydistill.evaluate.upstream import Upstream
from raydistill.utils import log


def _portable(upstream: Upstream) -> Upstream:
    """A copy of ``upstream`` that pickles (for another process): weight-norm parametrisations
    (torchaudio's positional convolution) are baked into plain weights, the same tensors the
    parametrisation computes, so the scores are the same. (The copy never loads a state dict,
    so weight norm's state-dict compatibility hook, a closure that cannot be pickled, goes too.)"""
    import copy

    import torch
    from torch.nn.utils import parametrize

    upstream = copy.deepcopy(upstream)
    modules = upstream.modules() if isinstance(upstream, torch.nn.Module) else ()
    for module in modules:
        if parametrize.is_parametrized(module):
            for name in list(module.parametrizations):
                parametrize.remove_parametrizations(module, name, leave_parametrized=True)
        hooks = module._load_state_dict_pre_hooks
        for key, hook in list(hooks.items()):
            if "weight_norm" in getattr(getattr(hook, "hook", hook), "__qualname__", ""):
                del hooks[key]
    return upstream


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
                      jobs: int = 1) -> dict:
    """Score each upstream (in the expected order, best first) at every seed.

    ``jobs`` > 1 runs that many evaluations at once in separate processes (CPU: the cores
    split between them), which is faster than one evaluation on every core: the probes' small
    matrix products do not scale across threads. Each evaluation is seeded as in a sequential
    run; only the threads per evaluation differ, which can change float summation order.

    Returns:
        ``upstreams``: per upstream its ``scores`` (one :func:`score_metrics` dict per seed),
        ``mean`` and ``spread`` (max − min over seeds) of every task metric and the aggregates,
        and ``seconds`` per evaluation; ``gaps``: mean(``metric``) of each upstream minus the
        next one's; ``ordered``: True when every gap exceeds the larger of the two spreads.
    """
    runs = [(i, seed) for i in range(len(upstreams)) for seed in seeds]
    if jobs > 1 and len(runs) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        threads = max(1, (os.cpu_count() or 1) // jobs) if device == "cpu" else 0
        if progress:
            log(f"scoring {len(upstreams)} upstreams x {len(seeds)} seeds ({budget.name} suite), {jobs} at a time")
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            portable = [_portable(u) for u in upstreams]
            futures = {pool.submit(_score, portable[i], corpus, budget, seed, device, threads): n
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
    gaps, ordered = [], True
    for better, worse in zip(out, out[1:]):
        gap = better["mean"][metric] - worse["mean"][metric]
        margin = max(better["spread"][metric], worse["spread"][metric])
        gaps.append({"between": [better["name"], worse["name"]], "gap": gap, "spread": margin})
        ordered = ordered and gap > margin
    return {"metric": metric, "seeds": list(seeds), "budget": budget.name, "lr_scales": list(budget.lr_scales),
            "jobs": jobs, "upstreams": out, "gaps": gaps, "ordered": ordered}

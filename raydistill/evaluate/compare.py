"""Is the evaluation discriminative? Score several upstreams over several evaluation seeds and
check that they come out in the expected order with gaps larger than the seed spread.

The reference order on the embedded default: teacher > distilled student > random-init student
(same architecture) > FBank (``raydistill compare --checkpoint BEST``).
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from raydistill.corpus.manifest import Corpus
from raydistill.evaluate.suite import OVERALL_SCORE_METRICS, EvalBudget, evaluate_upstream, score_metrics
from raydistill.evaluate.upstream import Upstream
from raydistill.utils import log


def compare_upstreams(upstreams: Sequence[Upstream], corpus: Corpus, budget: EvalBudget, seeds: Sequence[int], *,
                      metric: str = "overall_score", device: str = "cpu", progress: bool = True) -> dict:
    """Score each upstream (in the expected order, best first) at every seed.

    Returns:
        ``upstreams``: per upstream its ``scores`` (one :func:`score_metrics` dict per seed),
        ``mean`` and ``spread`` (max − min over seeds) of every task metric and the aggregates,
        and ``seconds`` per evaluation; ``gaps``: mean(``metric``) of each upstream minus the
        next one's; ``ordered``: True when every gap exceeds the larger of the two spreads.
    """
    out = []
    for upstream in upstreams:
        scores, seconds = [], []
        for seed in seeds:
            start = time.perf_counter()
            if progress:
                log(f"scoring {upstream.name} (seed {seed}, {budget.name} suite)")
            scores.append(score_metrics(evaluate_upstream(upstream, corpus, budget, seed=seed, device=device)))
            seconds.append(time.perf_counter() - start)
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
    return {"metric": metric, "seeds": list(seeds), "budget": budget.name, "upstreams": out, "gaps": gaps,
            "ordered": ordered}

"""Query-by-example spoken term detection (SUPERB QbE), no training: subsequence DTW of a spoken
keyword against every document, one hidden state at a time, best state chosen on dev.

On the embedded corpus the queries are the keyword clips (``yes`` … ``go``, trimmed to their
speech) and the documents are the sentences and commands of the same split; a document is
relevant when its text contains the query's word. s3prl's recipe (``quesst14_dtw``) is kept:
per-dimension z-normalisation over queries and documents, distance ``exp(cosine distance) − 1``,
per-query min-max normalisation of the distance matrix, subsequence DTW with dtw-python's
``asymmetric`` step pattern (each query frame advances the document by 0, 1 or 2 frames; open
begin and end), path cost normalised by the query length. QUESST's MTWV needs its scoring tool
and a calibrated threshold; on a few hundred trials it is mostly zero, so the metric here is the
**mean average precision (MAP, %)** of the documents ranked by DTW cost, a threshold-free
ranking metric. It enters the overall score as an accuracy-like x.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

FRAME = 320  # samples per 20 ms upstream frame
MIN_QUERY_FRAMES = 5  # s3prl: shorter queries get score 0; here they are dropped


def speech_span(wave: np.ndarray, *, hop: int = FRAME, floor_db: float = 20.0) -> tuple[int, int]:
    """[first, last) 20 ms frames of a clip whose energy is within ``floor_db`` of its loudest
    frame: the spoken word inside a 1 s keyword clip (noise sits well below it)."""
    frames = max(len(wave) // hop, 1)
    energy = np.square(wave[: frames * hop].reshape(frames, -1).astype(np.float64)).mean(-1) + 1e-12
    db = 10 * np.log10(energy)
    loud = np.flatnonzero(db >= db.max() - floor_db)
    return int(loud[0]), int(loud[-1]) + 1


def subsequence_dtw(cost: torch.Tensor) -> torch.Tensor:
    """Best path cost of the query (rows) inside each document (columns), normalised by query length.

    Args:
        cost: [Q, N] frame distances of one query against N document frames; +inf marks
            columns that no path may use (padding between documents).

    Returns:
        [N] the normalised cost of the best path ending at each document frame (open begin:
        a path may start at any frame of row 0). Step pattern "asymmetric": (i-1, j), (i-1, j-1),
        (i-1, j-2) -> (i, j).
    """
    acc = cost[0].clone()
    inf = torch.full((2,), float("inf"), dtype=cost.dtype, device=cost.device)
    for i in range(1, cost.shape[0]):
        shifted1 = torch.cat([inf[:1], acc[:-1]])
        shifted2 = torch.cat([inf, acc[:-2]])
        acc = cost[i] + torch.minimum(acc, torch.minimum(shifted1, shifted2))
    return acc / cost.shape[0]


def average_precision(scores: Sequence[float], relevant: Sequence[bool]) -> float:
    """AP of a ranking by descending score: mean precision at the rank of each relevant item."""
    scores, relevant = np.asarray(scores, dtype=np.float64), np.asarray(relevant, dtype=bool)
    if not relevant.any():
        return float("nan")
    hits = relevant[np.argsort(-scores, kind="stable")]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].mean())


def qbe_scores(queries: Sequence[np.ndarray], documents: Sequence[np.ndarray]) -> np.ndarray:
    """[num queries, num documents] detection scores (−normalised DTW cost) on one state.

    Args:
        queries, documents: [T, D] features of one hidden state.
    """
    everything = np.concatenate([*queries, *documents]).astype(np.float32)
    mean, std = everything.mean(0), everything.std(0) + 1e-8
    znorm = [torch.from_numpy((x.astype(np.float32) - mean) / std) for x in (*queries, *documents)]
    q, docs = znorm[: len(queries)], znorm[len(queries):]
    # documents laid end to end, each followed by 2 blocked columns so no path crosses over
    lengths = [d.shape[0] for d in docs]
    stacked = torch.nn.functional.normalize(torch.cat(docs), dim=-1)
    ends = np.cumsum(lengths)
    starts = ends - np.asarray(lengths)
    gap = 2
    column = torch.from_numpy(np.concatenate([np.arange(s, e) + gap * k for k, (s, e) in enumerate(zip(starts, ends))]))
    width = int(ends[-1]) + gap * len(docs)
    out = np.zeros((len(q), len(docs)))
    for qi, query in enumerate(q):
        dist = torch.exp(1.0 - torch.nn.functional.normalize(query, dim=-1) @ stacked.T) - 1.0  # [Q, N]
        lo, hi = dist.min(-1, keepdim=True).values, dist.max(-1, keepdim=True).values
        dist = (dist - lo) / (hi - lo + 1e-8)
        cost = torch.full((dist.shape[0], width), float("inf"))
        cost[:, column] = dist
        best = subsequence_dtw(cost)[column]
        out[qi] = [-float(best[s:e].min()) for s, e in zip(starts, ends)]
    return out


def mean_average_precision(queries, query_words, documents, document_words) -> float:
    """MAP (%) over the queries with at least one relevant document (one state)."""
    scores = qbe_scores(queries, documents)
    aps = [average_precision(scores[i], [w in words for words in document_words])
           for i, w in enumerate(query_words)]
    aps = [a for a in aps if not np.isnan(a)]
    return 100.0 * float(np.mean(aps)) if aps else float("nan")


def run_qbe(dev: tuple, test: tuple, num_states: int) -> dict:
    """Every state on dev, the best one on test.

    Args:
        dev, test: (query features [T, L, D], query words, document features [T, L, D],
            document word sets) per split.

    Returns:
        ``map`` (test, %), ``map_dev`` (best dev, %), ``best_layer``, ``dev_curve`` ([state, MAP]).
    """
    def at(split, layer):
        q, qw, d, dw = split
        return mean_average_precision([x[:, layer].astype(np.float32) for x in q], qw,
                                      [x[:, layer].astype(np.float32) for x in d], dw)

    curve = [[layer, at(dev, layer)] for layer in range(num_states)]
    best_layer, best_dev = max(curve, key=lambda c: (np.nan_to_num(c[1], nan=-1.0), -c[0]))
    return {"map": at(test, best_layer), "map_dev": best_dev, "best_layer": best_layer, "dev_curve": curve}

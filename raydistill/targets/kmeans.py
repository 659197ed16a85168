"""k-means for HuBERT targets: faiss Lloyd iterations seeded with k-means++.

The fairseq/torchaudio recipe uses scikit-learn ``MiniBatchKMeans`` (k-means++ init);
faiss runs the same Lloyd iterations an order of magnitude faster, but its default
random init gives worse centroids (docs/architecture.md#k-means), so we seed it with
k-means++ computed on a subsample. faiss-gpu is used when installed and a GPU is present.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from raydistill.errors import UserError


def _faiss():
    """The ``faiss`` module, or one line naming the fix. faiss-gpu's loader raises RuntimeError when
    one of the CUDA 12 libraries it needs (nvidia-cuda-runtime-cu12, nvidia-cublas-cu12,
    nvidia-curand-cu12) is not installed, and the dynamic loader OSError when a shared object is
    missing: neither is an ImportError, and both would surface as a traceback at the first k-means."""
    try:
        import faiss
    except ImportError:
        raise UserError("faiss is not installed (raydistill depends on it): pip install faiss-cpu, or faiss-gpu") from None
    except (RuntimeError, OSError) as e:
        reason = " ".join(str(e).split())  # one line
        raise UserError(f"faiss is installed but cannot load ({reason}): reinstall it with its dependencies, "
                        "scripts/setup.sh gpu (or pip install faiss-gpu), or use faiss-cpu: scripts/setup.sh") from None
    return faiss


def kmeans_plusplus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding (Arthur & Vassilvitskii 2007) on ``x`` [N, D] float32 → [k, D]."""
    n = x.shape[0]
    centroids = np.empty((k, x.shape[1]), dtype=np.float32)
    centroids[0] = x[rng.integers(n)]
    sq_norms = np.einsum("nd,nd->n", x, x)
    closest = sq_norms - 2 * x @ centroids[0] + centroids[0] @ centroids[0]
    for i in range(1, k):
        probs = np.clip(closest, 0, None)
        total = probs.sum()
        idx = rng.integers(n) if total <= 0 else rng.choice(n, p=probs / total)
        centroids[i] = x[idx]
        dist = sq_norms - 2 * x @ centroids[i] + centroids[i] @ centroids[i]
        np.minimum(closest, dist, out=closest)
    return centroids


def fit_kmeans(
    x: np.ndarray,
    k: int,
    *,
    seed: int = 0,
    niter: int = 50,
    max_points: int = 100_000,
    init_points: int = 20_000,
) -> tuple[np.ndarray, float]:
    """Fit ``k`` centroids to ``x`` [N, D].

    Args:
        x: features (any float dtype; converted to float32).
        k: number of clusters.
        seed: seeds the subsampling, k-means++ and faiss.
        niter: Lloyd iterations.
        max_points: fit on at most this many random rows (HuBERT fits on a 10 % subset).
        init_points: rows used for the k-means++ seeding.

    Returns:
        (centroids [k, D] float32, inertia = mean squared distance of the fit rows to their centroid).
    """
    faiss = _faiss()
    n, d = x.shape
    if n < k:
        raise UserError(f"k-means needs at least K={k} frames, found {n}: use a smaller K or a bigger corpus")
    rng = np.random.default_rng(seed)
    # rows first, then float32: a memory-mapped x is never read whole
    rows = np.sort(rng.choice(n, max_points, replace=False)) if n > max_points else slice(None)
    x = np.asarray(x[rows], dtype=np.float32)
    init_x = x if x.shape[0] <= init_points else x[rng.choice(x.shape[0], init_points, replace=False)]
    init = kmeans_plusplus(np.ascontiguousarray(init_x), k, rng)
    km = faiss.Kmeans(
        d, k, niter=niter, seed=seed, verbose=False,
        max_points_per_centroid=max(256, -(-x.shape[0] // k)),  # use every row we pass (faiss subsamples otherwise)
        gpu=_gpu_available(faiss),
    )
    km.train(np.ascontiguousarray(x), init_centroids=init)
    sq_dists, _ = assign(x, km.centroids, return_distances=True)
    inertia = float(sq_dists.mean())
    return np.ascontiguousarray(km.centroids, dtype=np.float32), inertia


def assign(
    x: np.ndarray, centroids: np.ndarray, *, chunk: int = 65_536, return_distances: bool = False,
    out: Optional[np.ndarray] = None,
):
    """Nearest centroid of every row of ``x`` (squared L2), in chunks so memory stays bounded:
    one chunk of float32 rows at a time, whatever the size of a memory-mapped ``x``.

    Returns labels [N] (``out`` when given, e.g. an int32 memmap; else int64), or
    ``(sq_distances [N], labels [N])`` with ``return_distances``.
    """
    faiss = _faiss()
    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    labels = out if out is not None else np.empty(len(x), dtype=np.int64)
    dists = np.empty(len(x), dtype=np.float32) if return_distances else None
    for start in range(0, len(x), chunk):
        block = np.ascontiguousarray(x[start : start + chunk], dtype=np.float32)
        d, i = index.search(block, 1)
        labels[start : start + len(block)] = i[:, 0]
        if dists is not None:
            dists[start : start + len(block)] = d[:, 0]
    return (dists, labels) if return_distances else labels


def _gpu_available(faiss) -> bool:
    return hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0

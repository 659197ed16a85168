"""k-means for HuBERT targets: raydistill's faiss path vs the scikit-learn recipe, side by side.

Both fit the same rows. raydistill's ``fit_kmeans`` seeds faiss's Lloyd iterations with
k-means++ (raydistill/targets/kmeans.py); the reference is scikit-learn ``MiniBatchKMeans``
with the fairseq/torchaudio HuBERT recipe's settings (k-means++, batch 10000, n_init 20,
max_iter 100, max_no_improvement 100, reassignment_ratio 0, tol 0). faiss with its default
random init is measured too. Inertia is the mean squared distance of every row to its
nearest centroid, computed the same way for all three. One JSON line.

    .venv/bin/python bench/kmeans.py                      # the embedded teacher's layer features
    .venv/bin/python bench/kmeans.py --synthetic 200000 768 --k 500   # HuBERT-base-sized rows
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, find_features, peak_memory_mb  # noqa: E402


def synthetic(n: int, d: int, seed: int) -> np.ndarray:
    """Rows from a mixture of 2K anisotropic Gaussians (clustered like speech features, not uniform)."""
    rng = np.random.default_rng(seed)
    k = 1000
    means = rng.standard_normal((k, d)).astype(np.float32) * 3
    scales = rng.uniform(0.5, 2.0, (k, 1)).astype(np.float32)
    which = rng.integers(k, size=n)
    return means[which] + scales[which] * rng.standard_normal((n, d), dtype=np.float32)


def mse(x: np.ndarray, centroids: np.ndarray) -> float:
    from raydistill.targets.kmeans import assign

    d, _ = assign(x, np.asarray(centroids, np.float32), return_distances=True)
    return float(d.mean())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--features", type=Path, help="a features.npy [N, D] (default: the embedded teacher's, "
                   "layer --layer, from --workdir's target cache)")
    p.add_argument("--workdir", type=Path, default=Path("runs"))
    p.add_argument("--layer", type=int, default=3)
    p.add_argument("--synthetic", type=int, nargs=2, metavar=("N", "D"), help="Gaussian-mixture rows instead")
    p.add_argument("--rows", type=int, default=200_000, help="fit on at most this many rows")
    p.add_argument("--k", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-sklearn", action="store_true", help="faiss only (the recipe takes minutes)")
    args = p.parse_args(argv)

    import faiss
    from sklearn.cluster import MiniBatchKMeans

    from raydistill.targets.kmeans import fit_kmeans

    if args.synthetic:
        x, source = synthetic(*args.synthetic, seed=args.seed), "synthetic-gmm"
    else:
        path = args.features or find_features(args.workdir, args.layer)
        x, source = np.load(path, mmap_mode="r"), str(path)
    rng = np.random.default_rng(args.seed)
    if len(x) > args.rows:
        x = x[np.sort(rng.choice(len(x), args.rows, replace=False))]
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    out = {"bench": "kmeans", "source": source, "rows": n, "dim": d, "k": args.k,
           "threads": faiss.omp_get_max_threads()}

    started = time.perf_counter()
    centroids, _ = fit_kmeans(x, args.k, seed=args.seed, max_points=n)
    out["faiss_kmeanspp_seconds"] = round(time.perf_counter() - started, 4)  # tiny inputs take < 10 ms
    out["faiss_kmeanspp_mse"] = mse(x, centroids)

    started = time.perf_counter()
    km = faiss.Kmeans(d, args.k, niter=50, seed=args.seed, max_points_per_centroid=-(-n // args.k) + 1)
    km.train(x)
    out["faiss_default_seconds"] = round(time.perf_counter() - started, 4)
    out["faiss_default_mse"] = mse(x, km.centroids)

    if not args.skip_sklearn:
        started = time.perf_counter()
        ref = MiniBatchKMeans(n_clusters=args.k, init="k-means++", max_iter=100, batch_size=10_000, tol=0.0,
                              max_no_improvement=100, n_init=20, reassignment_ratio=0.0, compute_labels=False,
                              random_state=args.seed).fit(x)
        out["sklearn_recipe_seconds"] = round(time.perf_counter() - started, 4)
        out["sklearn_recipe_mse"] = mse(x, ref.cluster_centers_)
        out["speedup"] = round(out["sklearn_recipe_seconds"] / out["faiss_kmeanspp_seconds"], 1)
        out["goal_speedup"] = 10.0
        out["mse_ratio"] = round(out["faiss_kmeanspp_mse"] / out["sklearn_recipe_mse"], 4)
    out.update(peak_memory_mb())
    emit(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

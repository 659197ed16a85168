"""bench/: each benchmark runs end to end on tiny inputs and prints its JSON measurements."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def test_kmeans_bench_prints_one_comparable_measurement():
    out = subprocess.run([sys.executable, str(REPO / "bench" / "kmeans.py"), "--synthetic", "6000", "16", "--k", "20"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    (line,) = out.stdout.strip().splitlines()
    record = json.loads(line)
    assert (record["rows"], record["dim"], record["k"]) == (6000, 16, 20)
    for name in ("faiss_kmeanspp", "faiss_default", "sklearn_recipe"):
        assert record[f"{name}_seconds"] > 0 and record[f"{name}_mse"] > 0
    # k-means++-seeded Lloyd reaches the recipe's quality on well-separated clusters
    assert record["mse_ratio"] < 1.1


def test_kmeans_bench_figures_on_a_known_clock_and_known_clusters(tmp_path, monkeypatch, capsys):
    """The printed figures against values worked out by hand. A fake clock gives each fit a known
    duration. The rows are two pairs of points, 0, 4 and 10, 14: raydistill's fit finds their
    means 2 and 12, inertia 4 (the mean of squared distances, every point 2 from its centroid);
    the recipe's fit is replaced by centroids 0 and 12, inertia (0 + 16 + 4 + 4) / 4 = 6."""
    import importlib.util
    from types import SimpleNamespace

    spec = importlib.util.spec_from_file_location("bench_kmeans", REPO / "bench" / "kmeans.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    ticks = iter([10.0, 10.5, 20.0, 20.25, 30.0, 34.0])  # faiss k-means++ 0.5 s, faiss default 0.25 s, recipe 4 s
    monkeypatch.setattr(bench, "time", SimpleNamespace(perf_counter=lambda: next(ticks)))

    class Recipe:
        def __init__(self, **settings):
            pass

        def fit(self, x):
            self.cluster_centers_ = np.array([[0.0], [12.0]])
            return self

    monkeypatch.setattr("sklearn.cluster.MiniBatchKMeans", Recipe)
    path = tmp_path / "features.npy"
    np.save(path, np.tile(np.array([[0.0], [4.0], [10.0], [14.0]], dtype=np.float32), (10, 1)))
    assert bench.main(["--features", str(path), "--k", "2"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert (record["faiss_kmeanspp_seconds"], record["faiss_default_seconds"], record["sklearn_recipe_seconds"]) == (
        0.5, 0.25, 4.0)
    assert record["speedup"] == 8.0  # the recipe's time over raydistill's
    assert record["faiss_kmeanspp_mse"] == pytest.approx(4.0) and record["sklearn_recipe_mse"] == pytest.approx(6.0)
    assert record["mse_ratio"] == 0.6667  # raydistill's inertia over the recipe's, rounded to 4 places


def test_bench_refuses_a_workdir_without_teacher_features(tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "bench" / "kmeans.py"), "--workdir", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "run the main command first" in out.stderr
    assert "Traceback" not in out.stderr


def test_masking_bench_measures_what_each_knob_masks(tiny_corpus):
    """bench/masking.py on the loop's real batches of a corpus and on fixed shapes: one JSON line
    per setting; ``mask.frac`` lands on its target, ``mask.prob`` masks less than it says."""
    runs = {}
    for name, extra in (("corpus", ["--corpus", str(tiny_corpus.root), "--batch-seconds", "8"]),
                        ("shape", ["--shape", "4x300"])):
        out = subprocess.run([sys.executable, str(REPO / "bench" / "masking.py"), *extra, "--batches", "20"],
                             capture_output=True, text=True, timeout=300, cwd=REPO)
        assert out.returncode == 0, out.stderr
        head, *settings = [json.loads(line) for line in out.stdout.strip().splitlines()]
        assert head["batches"] == 20 and len(settings) >= 6
        runs[name] = {(s["selection"], "frac" if "frac" in s else "prob", s.get("frac", s.get("prob"))): s
                      for s in settings}
    assert runs["shape"][("uniform", "frac", 0.4)]["masked_frac"] == 0.4
    assert runs["shape"][("static", "frac", 0.57)]["masked_frac"] == 0.57
    for measured in runs.values():
        assert abs(measured[("uniform", "frac", 0.2)]["masked_frac"] - 0.2) < 0.01
        uniform = measured[("uniform", "prob", 0.8)]
        assert uniform["masked_frac"] < uniform["single_row"] < 0.8  # the batch cut takes its share


@pytest.mark.slow
def test_ablate_trains_one_student_per_value(tmp_path):
    """bench/ablate.py at smoke scale: the base config with one knob set to each value, trained
    and scored; each JSON line carries the value it ran with and the trial's scores."""
    out = subprocess.run([sys.executable, str(REPO / "bench" / "ablate.py"), "--space", str(REPO / "search_spaces" / "distil.yaml"),
                          "--vary", "optim.feature_grad_mult=0.1,1.0", "--set", "student.num_layers=1",
                          "--smoke", "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stderr[-2000:]
    runs = [json.loads(line) for line in out.stdout.strip().splitlines()]
    assert [r["optim.feature_grad_mult"] for r in runs] == [0.1, 1.0]
    assert all(r["set"] == {"student.num_layers": 1} and "overall_score" in r and r["params"] > 0 for r in runs)
    assert runs[0]["params"] == runs[1]["params"]  # the same student, only the gradient scale differs


def test_teacher_pass_bench_measures_batched_and_one_at_a_time(tiny_corpus, tmp_path):
    """bench/teacher_pass.py --what pass in process (the Ray rows need a cluster of their own:
    test_cluster.py runs the distributed pass), and --what kmeans on two small synthetic sizes."""
    out = subprocess.run([sys.executable, str(REPO / "bench" / "teacher_pass.py"), "--what", "pass", "--corpus",
                          str(tiny_corpus.root), "--utterances", "6", "--ray-workers", "", "--workdir", str(tmp_path)],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    record = json.loads(out.stdout.strip().splitlines()[-1])
    assert record["utterances"] == 6 and record["batched_speedup"] > 0
    for mode in ("in_process_one_at_a_time", "in_process_batched"):
        assert record[mode]["audio_seconds_per_second"] > 0
    out = subprocess.run([sys.executable, str(REPO / "bench" / "teacher_pass.py"), "--what", "kmeans", "--frames",
                          "3000,12000", "--dim", "16", "--k", "10", "--workdir", str(tmp_path)],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    sizes = json.loads(out.stdout.strip().splitlines()[-1])["sizes"]
    assert [s["frames"] for s in sizes] == [3000, 12000]
    assert all(s["assign_peak_anon_mib"] > 0 for s in sizes)


def test_search_vs_random_proxy_spaces_and_the_reach_ratio(tmp_path):
    """bench/search_vs_random.py: its proxy spaces are valid dice.yaml spaces with the asked
    steps and rungs, and the ratio is read off the best-so-far curves."""
    sys.path.insert(0, str(REPO / "bench"))
    import search_vs_random as svr

    from raydistill.search.space import load_space

    asha = load_space(svr.proxy_space(100, 4, tmp_path)).base_config()
    rnd = load_space(svr.proxy_space(100, 1, tmp_path)).base_config()
    assert (asha.optim.max_steps, asha.num_evals, rnd.num_evals) == (100, 4, 1)
    points = [(60.0, 30.0), (120.0, 33.0), (180.0, 33.0), (240.0, 35.0)]
    assert svr.reach(points, 33.0) == 120.0 and svr.reach(points, 36.0) is None
    assert svr.best_within(points, 200.0) == 33.0 and svr.best_within(points, 30.0) == -math.inf
    works = [{"steps": 100, "evals": 4, "wall": 150.0, "train": 40.0, "eval": [20.0, 21, 22, 20], "start": 27.0},
             {"steps": 25, "evals": 1, "wall": 60.0, "train": 12.0, "eval": [25.0], "start": 23.0}]
    price = svr.prices(works)  # the fastest seen: 0.4 s a step, 20 s an evaluation, 23 s a start
    assert price == {"step": 0.4, "eval": 20.0, "start": 23.0}
    assert svr.cost(works[0], price) == 23 + 100 * 0.4 + 4 * 20 and svr.cost(works[1], price) == 23 + 10 + 20
    row = {"seed": 0, "equal_compute": 900.0, "tpe-asha_best_at_equal": 36.0, "random_best_at_equal": 34.5,
           "tpe-asha_wall": 1000.0, "random_wall": 990.0, "tpe-asha_trials": 16, "tpe-asha_stopped": 9, "tpe-asha_compute": 900.0, "tpe-asha_best": 36.0,
           "tpe-asha_confirmed_best": 35.1, "random_trials": 8, "random_compute": 950.0, "random_best": 35.0,
           "random_confirmed_best": None, "random_reached_at": 600.0, "tpe_asha_reached_at": 120.0, "ratio": 5.0}
    assert "| 0 | 16 (9) | 900 (1000) | 36.00 | 35.10 | 8 | 950 (990) | 35.00 | – | 900 | 36.00 / 34.50 | 600 s | 120 s | 5.00 |" in svr.table([row])

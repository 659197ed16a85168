"""bench/gpu_check.sh, the GPU acceptance check, in its CPU mode: every part runs at tiny sizes
(what needs CUDA says so) and the one JSON summary has every key, so the script is known to work
the day a GPU machine runs it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SPACES = ["dice.yaml", "distil.yaml", "kd.yaml", "star.yaml", "arm.yaml"]


@pytest.mark.slow
def test_gpu_check_in_cpu_mode_prints_one_complete_summary(tmp_path):
    import ray

    if ray.is_initialized():
        ray.shutdown()  # the script's search starts a local cluster: never two on one machine
    env = {**os.environ, "PYTHON": sys.executable, "WORK": str(tmp_path)}
    out = subprocess.run([str(REPO / "bench" / "gpu_check.sh"), "--cpu"], capture_output=True, text=True, env=env,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    (line,) = out.stdout.strip().splitlines()  # one JSON summary, nothing else on stdout
    summary = json.loads(line)
    assert set(summary) == {"check", "mode", "setup", "device", "kmeans", "step", "teacher_pass", "space_memory",
                            "search", "failed", "seconds"}
    assert summary["mode"] == "cpu" and summary["failed"] == []
    assert summary["device"]["cuda_available"] is False and "faiss" in summary["device"]
    assert summary["kmeans"]["gpu"] == "skipped: no GPU" and summary["kmeans"]["cpu"]["faiss_kmeanspp_seconds"] > 0
    step = summary["step"]["live-bf16-eager"]
    assert step["student_params"] == 26_873_344 and step["audio_seconds_per_second"] > 0  # DiceHuBERT's D/2 student
    assert summary["teacher_pass"]["audio_seconds_per_second"] > 0
    assert list(summary["space_memory"]) == SPACES
    assert summary["space_memory"]["distil.yaml"]["peak_host_mb"] > 0
    assert [summary["space_memory"][s] for s in SPACES if s != "distil.yaml"] == ["skipped: no GPU"] * 4
    assert "best trial" in summary["search"]["best"] and summary["search"]["trials"] == 1

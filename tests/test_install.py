"""scripts/setup.sh's GPU path, run for real: pip installs from the package index (network)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_setup_gpu_in_a_fresh_venv_gives_an_importable_faiss(tmp_path):
    """`scripts/setup.sh gpu`'s faiss step in a fresh venv holding what its earlier steps leave
    there (faiss-cpu, raydistill's dependency): faiss-gpu replaces it, with the CUDA 12 libraries
    its loader needs, and `import faiss` works (on a machine without a GPU too). The whole
    `setup.sh gpu` adds torch and raydistill's dependencies to this: minutes and gigabytes."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    subprocess.run([py, "-m", "pip", "install", "-q", "faiss-cpu>=1.8"], check=True)
    out = subprocess.run([str(REPO / "scripts" / "setup.sh"), "gpu", "faiss-only"], capture_output=True, text=True,
                         env={**os.environ, "SETUP_VENV": str(venv)}, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    check = subprocess.run([py, "-c", "import faiss; print(faiss.__version__, hasattr(faiss, 'GpuIndexFlatL2'))"],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr[-2000:]
    assert check.stdout.split() == ["1.15.1", "True"]  # the GPU build, loaded
    installed = subprocess.run([py, "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True).stdout
    assert "faiss-gpu==" in installed and "faiss-cpu==" not in installed

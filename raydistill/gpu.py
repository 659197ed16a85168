"""Is there a GPU that torch cannot use? The check behind `raydistill doctor` (docs/gpu.md).

torch falls back to the CPU without a word when its CUDA build is newer than what the NVIDIA
driver supports (the default torch 2.14.1 is a CUDA 13 build: drivers >= 580), so a search
meant for GPUs would run on CPUs. This module compares what the OS shows (the device node,
``nvidia-smi``) with what torch sees, and says how to fix a mismatch. It needs no GPU.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Optional

DEVICE_NODE = Path("/dev/nvidia0")  # the kernel driver's node for the first GPU
FIX = ("install a torch and torchaudio pair built for a CUDA the driver supports, e.g. "
       "TORCH_SPEC='torch==2.10.0 torchaudio==2.10.0' scripts/setup.sh gpu (CUDA 12.8, PyPI), or upgrade "
       "the driver (docs/gpu.md)")


def _nvidia_smi(*args: str) -> Optional[str]:
    """``nvidia-smi ARGS``'s output, or None when it is not installed or fails."""
    try:
        out = subprocess.run(["nvidia-smi", *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def os_gpus() -> list[str]:
    """The NVIDIA GPUs the OS shows: ``nvidia-smi -L``'s lines, else the device node when it exists."""
    listed = _nvidia_smi("-L")
    gpus = [line.strip() for line in (listed or "").splitlines() if line.startswith("GPU ")]
    if not gpus and DEVICE_NODE.exists():
        gpus = [str(DEVICE_NODE)]
    return gpus


def driver_version() -> Optional[str]:
    """The NVIDIA driver's version (e.g. ``"550.54.15"``), or None when nvidia-smi cannot say."""
    out = _nvidia_smi("--query-gpu=driver_version", "--format=csv,noheader")
    return out.splitlines()[0].strip() if out else None


def cuda_problem() -> Optional[str]:
    """One error line when the OS shows an NVIDIA GPU that torch cannot use, else None.

    Names torch's version and CUDA build, the driver's version and the fix (TORCH_SPEC).
    """
    gpus = os_gpus()
    if not gpus:
        return None
    import torch

    if torch.cuda.is_available():
        return None
    build = f"a CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build"
    driver = driver_version()
    driver = f"NVIDIA driver {driver}" if driver else "the NVIDIA driver (version unknown: nvidia-smi did not answer)"
    return (f"the OS shows an NVIDIA GPU ({gpus[0]}) but torch cannot use it, so work would run on the CPU: "
            f"torch {torch.__version__} is {build}, with {driver} (CUDA 13 builds need driver >= 580, "
            f"CUDA 12 builds >= 525): {FIX}")

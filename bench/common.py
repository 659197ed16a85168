"""Helpers shared by the benchmarks: JSON-line output, peak memory, machine description."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path


def machine() -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def peak_memory_mb(device="cpu") -> dict[str, float]:
    """raydistill's peak host (and CUDA) memory of this process, rounded for the JSON line."""
    from raydistill.utils import peak_memory

    return {k: round(v, 1) for k, v in peak_memory(device).items()}


def emit(record: dict) -> None:
    """One measurement = one JSON line on stdout (progress goes to stderr)."""
    print(json.dumps({**record, "machine": machine()}), flush=True)


def find_features(workdir: Path, layer: int) -> Path:
    """The embedded teacher's cached layer features in ``workdir`` (written by the main command)."""
    found = sorted((Path(workdir) / "cache" / "targets").glob(f"*/layer{layer}/features.npy"),
                   key=lambda p: p.stat().st_size)
    if not found:
        print(f"bench: no cached teacher features of layer {layer} under {workdir}/cache/targets: "
              "run the main command first (README) or pass --features/--synthetic", file=sys.stderr)
        raise SystemExit(2)
    return found[-1]

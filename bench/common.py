"""Helpers shared by the benchmarks: JSON-line output, peak memory, machine description."""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
from pathlib import Path


def machine() -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def peak_host_mb() -> float:
    """Peak resident memory of this process (and its waited-for children), MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, kids) / 1024, 1)  # Linux reports KiB


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

"""raydistill.gpu: a GPU the OS shows but torch cannot use is an error line, with fakes for the OS
view (nvidia-smi, /dev/nvidia0) and torch's CUDA: no GPU needed."""

from types import SimpleNamespace

import pytest
import torch

from raydistill import gpu

SMI_L = "GPU 0: NVIDIA A10G (UUID: GPU-0f4e5c2a-1111-2222-3333-444455556666)"


def fake_os(monkeypatch, tmp_path, *, smi=None, node=False, driver="535.183.01"):
    """The OS view: ``smi`` = what ``nvidia-smi -L`` prints (None: not installed), ``node``: /dev/nvidia0."""
    def nvidia_smi(*args):
        if smi is None:
            return None
        return smi if args == ("-L",) else driver

    monkeypatch.setattr(gpu, "_nvidia_smi", nvidia_smi)
    path = tmp_path / "nvidia0"
    if node:
        path.touch()
    monkeypatch.setattr(gpu, "DEVICE_NODE", path)


def fake_torch(monkeypatch, *, available, cuda="13.0"):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch, "version", SimpleNamespace(cuda=cuda))


def test_a_gpu_torch_cannot_use_names_both_versions_and_the_fix(monkeypatch, tmp_path):
    fake_os(monkeypatch, tmp_path, smi=SMI_L, node=True)
    fake_torch(monkeypatch, available=False)
    problem = gpu.cuda_problem()
    assert "\n" not in problem
    for part in ("NVIDIA A10G", "CUDA 13.0 build", "driver 535.183.01", "TORCH_SPEC=", "docs/gpu.md"):
        assert part in problem, part


def test_the_device_node_alone_counts_and_a_cpu_build_says_so(monkeypatch, tmp_path):
    fake_os(monkeypatch, tmp_path, smi=None, node=True)  # a container with the device but no nvidia-smi
    fake_torch(monkeypatch, available=False, cuda=None)
    problem = gpu.cuda_problem()
    assert f"({tmp_path / 'nvidia0'})" in problem and "CPU-only build" in problem and "version unknown" in problem


@pytest.mark.parametrize("smi, node, available", [
    (None, False, False),  # no GPU at all: the CPU is what there is
    ("", False, False),  # nvidia-smi installed, no GPU listed
    (SMI_L, True, True),  # torch uses the GPU
])
def test_no_problem(monkeypatch, tmp_path, smi, node, available):
    fake_os(monkeypatch, tmp_path, smi=smi, node=node)
    fake_torch(monkeypatch, available=available)
    assert gpu.cuda_problem() is None


def test_nvidia_smi_missing_or_failing_is_none(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert gpu._nvidia_smi("-L") is None

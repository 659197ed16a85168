"""DDP over gloo, as a Ray Train worker group runs it, without Ray: two ranks train each base
space's smoke configuration (HuBERT-base-shaped teacher, layer drop, the methods' heads) for two
steps, and their weights agree afterwards. ``find_unused_parameters`` (layer drop) needs every
parameter a step uses, the heads included, to be reached from what ``DDP.forward`` returns: the
loop wraps the method's whole step (student and loss) for that (train/loop.py: ``MethodStep``)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from raydistill.methods import teacher_needs
from raydistill.prepare import Workdir, ensure_targets
from raydistill.search.space import load_space
from raydistill.targets.store import TeacherNeeds
from raydistill.teacher.sources import load_teacher
from raydistill.train.data import TrainData
from raydistill.train.loop import train

REPO = Path(__file__).resolve().parents[1]
BASE = REPO / "search_spaces" / "base"
SPACES = ["dice.yaml", "kd.yaml", "star.yaml", "arm.yaml", "distil.yaml"]
pytestmark = pytest.mark.slow


def smoke_config(name: str):
    config = load_space(BASE / name, smoke=True).base_config()
    return dataclasses.replace(config, optim=dataclasses.replace(config.optim, max_steps=2), eval_every=2)


@pytest.fixture(scope="module")
def prepared(librispeech_corpus, base_teachers, tmp_path_factory):
    """The base teacher's targets that the five smoke configurations read, computed once."""
    teacher = load_teacher(f"torchaudio:{base_teachers['pretrain']}")
    info = teacher.info
    needs = [teacher_needs(smoke_config(name), info) for name in SPACES]
    union = TeacherNeeds(units=tuple(sorted({u for n in needs for u in n.units})),
                         features=tuple(sorted({f for n in needs for f in n.features})),
                         logits=any(n.logits for n in needs))
    workdir = Workdir(tmp_path_factory.mktemp("ddp") / "runs")
    store = ensure_targets(teacher, librispeech_corpus, workdir, union)
    return teacher, store


def _rank(rank: int, world: int, port: int, corpus, store_root, teacher_spec, out: str) -> None:
    """One rank: every base space's smoke configuration in turn, in one process group."""
    from raydistill.targets.store import TargetStore

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=dt.timedelta(seconds=120))
    teacher = load_teacher(teacher_spec)
    results = {}
    try:
        for name in SPACES:
            config = smoke_config(name)
            needs = teacher_needs(config, teacher.info)
            data = TrainData(corpus, TargetStore(Path(store_root)), needs, config.student.conv_layers)
            reports = []
            try:
                train(config, data, report=lambda m, c: reports.append(m), checkpoint_dir=Path(out) / name,  # noqa: B023 (train calls it now)
                      teacher=teacher.describe(), live_teacher=teacher if needs.live else None)
            except Exception as e:
                raise RuntimeError(f"{name} on rank {rank}: {e}") from e
            results[name] = {"steps": [m["step"] for m in reports], "world": reports[-1]["world_size"]}
        torch.save(results, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_train_every_base_space(prepared, librispeech_corpus, base_teachers, tmp_path):
    _, store = prepared
    assert smoke_config("dice.yaml").student.layer_drop > 0  # HuBERT-base's 0.05: find_unused_parameters
    mp.spawn(_rank, args=(2, _free_port(), librispeech_corpus, str(store.root),
                          f"torchaudio:{base_teachers['pretrain']}", str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        results = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert results == {name: {"steps": [2], "world": 2} for name in SPACES}

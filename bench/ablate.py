"""One knob, several values, same everything else: train and score without Ray, side by side.

Takes a search space's base configuration (``--space``), sets fixed overrides (``--set``),
and trains one student per value of the varied knob (``--vary``) and per training seed, with
the plain loop on the embedded default of the main command (``runs/``: corpus, teacher and
its target cache, computed here if missing), then scores it with the trials' own evaluation
(the full suite at the end, evaluation seed 0). One JSON line per run.

    .venv/bin/python bench/ablate.py --space search_spaces/dice.yaml --set nomask_weight=1.0 \\
        --vary optim.feature_grad_mult=0.1,1.0 --seeds 0,1
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, peak_memory_mb  # noqa: E402

from raydistill.config import TrainConfig  # noqa: E402
from raydistill.methods import teacher_needs  # noqa: E402
from raydistill.teacher.info import TeacherInfo
from raydistill.prepare import Workdir, default_device, ensure_targets, resolve_corpus, resolve_teacher  # noqa: E402
from raydistill.search.space import load_space, set_path  # noqa: E402
from raydistill.search.trial import make_evaluator, student_size  # noqa: E402
from raydistill.train.data import TrainData  # noqa: E402
from raydistill.train.loop import train  # noqa: E402


def assignment(text: str) -> tuple[str, list]:
    """``"optim.lr=1e-3,2e-3"`` -> ``("optim.lr", [0.001, 0.002])`` (values read as YAML)."""
    key, _, values = text.partition("=")
    if not key or not values:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE[,VALUE...], found {text!r}")
    return key, [yaml.safe_load(v) for v in values.split(",")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", type=Path, required=True, help="a search space: its base configuration is used")
    p.add_argument("--set", type=assignment, action="append", default=[], metavar="KEY=VALUE",
                   help="a fixed override (dotted TrainConfig path), repeatable")
    p.add_argument("--vary", type=assignment, required=True, metavar="KEY=V1,V2,...", help="the knob compared")
    p.add_argument("--seeds", default="0", help="training seeds (default 0)")
    p.add_argument("--suite", default="full", choices=("probe", "full"), help="final evaluation (default full)")
    p.add_argument("--workdir", type=Path, default=Path("runs"))
    p.add_argument("--smoke", action="store_true", help="the smoke corpus, teacher, steps and evaluation (a test)")
    args = p.parse_args()

    space = load_space(args.space, smoke=args.smoke)
    workdir = Workdir(args.workdir)
    device = default_device()
    corpus = resolve_corpus(None, workdir, smoke=args.smoke)
    teacher = resolve_teacher("embedded", workdir, corpus, smoke=args.smoke, device=device)
    budgets = {"probe": "smoke", "full": "smoke"} if args.smoke else {"probe": "probe", "full": args.suite}
    info = teacher.describe()
    key, values = args.vary
    for seed in (int(s) for s in args.seeds.split(",")):
        for value in values:
            d = space.base_for(space.method)
            for name, (fixed,) in args.set:
                set_path(d, name, fixed)
            set_path(d, key, value)
            set_path(d, "seed", seed)
            config = TrainConfig.from_dict(d, where="ablate")
            needs = teacher_needs(config, TeacherInfo.of(info))
            store = ensure_targets(teacher, corpus, workdir, needs, device=device)
            data = TrainData(corpus, store, needs, config.student.conv_layers)
            evaluate = make_evaluator(corpus, budgets, seed=0, device=device)
            reports: list[dict] = []
            started = time.perf_counter()
            with tempfile.TemporaryDirectory() as ckpt:
                train(config, data, report=lambda m, c: reports.append(m), checkpoint_dir=Path(ckpt),  # noqa: B023 (train calls it now)
                      evaluate=evaluate, teacher=info, live_teacher=teacher if needs.live else None, device=device)
            last = reports[-1]
            emit({"bench": "ablate", "space": str(args.space), "set": dict((k, v[0]) for k, v in args.set),
                  key: value, "seed": seed, "seconds": round(time.perf_counter() - started, 1),
                  **{k: round(v, 4) for k, v in last.items() if isinstance(v, float)},
                  **student_size(config, info), **peak_memory_mb(device)})


if __name__ == "__main__":
    main()

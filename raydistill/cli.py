"""The ``raydistill`` command line.

Bad input (a :class:`~raydistill.errors.UserError` or a bad flag) prints one line and exits
with code 2, without a traceback. Results go to stdout (JSON where a program may read them),
progress to stderr.

Imports marked ``# lazy: CLI start-up`` load torch, Ray, MLflow or matplotlib: each command
imports what it runs, so ``--help`` and a bad flag answer without them.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import sys
from pathlib import Path
from typing import Optional

from raydistill import __version__
from raydistill.errors import RunFailed, UserError
from raydistill.search.objectives import parse_objectives
from raydistill.utils import DISK_FULL_ERRNOS, disk_full, read_yaml

EPILOG = """\
Quick start (the embedded default: synthetic espeak-ng speech, a small HuBERT teacher pretrained here):
  raydistill search --space search_spaces/dice.yaml          # a real search: ~66 min on 2 CPU cores the first time
  raydistill search --space search_spaces/dice.yaml --smoke  # the same, tiny (a few minutes)
  raydistill report --experiment raydistill                  # leaderboard (and --out DIR: the report)
  raydistill export --experiment raydistill --out exported   # best configs + student checkpoint
  raydistill train --config exported/best.yaml               # rerun an exported configuration
"""


MASK_EMB_HELP = ("a file teacher may end with ?mask_emb=FILE: its mask embedding from FILE (a [D] tensor, or a state "
                 "dict with mask_generator.mask_embedding or masked_spec_embed), which masking distillation "
                 "(armhubert with arm.masking) needs when the teacher file has none, e.g. torchaudio's hubert_base")


def _common_run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", type=Path, default=Path("runs"),
                   help="corpora, caches, Ray results and the default MLflow store go here (default: ./runs)")
    p.add_argument("--mlflow-uri", help="MLflow tracking URI (default: sqlite:///<workdir>/mlflow.db)")
    p.add_argument("--experiment", default="raydistill", help="MLflow experiment name (default: raydistill)")
    p.add_argument("--address", help="an existing Ray cluster (ray://host:10001 or host:6379); default: start a local one")
    p.add_argument("--smoke", action="store_true", default=None,
                   help="a real but tiny run: small corpus, small teacher, few steps (tests and a first look)")
    p.add_argument("--corpus", help="a corpus directory (default: the embedded espeak-ng corpus)")
    p.add_argument("--teacher", help="embedded (default) | raydistill:CKPT | torchaudio:STATE_DICT[#arch] | hf:DIR; "
                                     + MASK_EMB_HELP)
    p.add_argument("--workers", type=int, default=None,
                   help="Ray Train workers per trial (DDP; default: the search space's resources, else 1)")
    p.add_argument("--cpus-per-worker", type=float, default=None,
                   help="CPUs per Train worker (default: the search space's resources, else 1)")
    p.add_argument("--gpus-per-worker", type=float, default=None,
                   help="GPUs per Train worker, fractions allowed (default: the search space's resources, "
                        "else 1 if the cluster has GPUs, else 0)")
    p.add_argument("--seed", type=int, default=0)


def _store_flags(p: argparse.ArgumentParser, *, search_help: str) -> None:
    """The flags that name an existing MLflow store, experiment and search (read by ``_store_uri``)."""
    p.add_argument("--mlflow-uri", help="MLflow tracking URI (default: sqlite:///<workdir>/mlflow.db)")
    p.add_argument("--workdir", type=Path, default=Path("runs"), help="where the default MLflow store is")
    p.add_argument("--experiment", default="raydistill")
    p.add_argument("--search", help=search_help)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raydistill",
        description="Find the best way to distill a HuBERT speech model: Ray Train runs the distillation, "
                    "Ray Tune + Optuna search its knobs, every trial and its SUPERB-style scores go to MLflow.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"raydistill {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("search", help="hyperparameter search of a distillation method (Ray Tune + Optuna + ASHA)",
                       description="Search a method's knobs: every trial is a Ray Train run, scored SUPERB-style "
                                   "and logged to MLflow (one parent run per search, one child run per trial).")
    p.add_argument("--space", type=Path, required=True, help="search-space YAML file (see search_spaces/)")
    p.add_argument("--trials", type=int, default=8, help="number of trials (default 8)")
    p.add_argument("--max-concurrent", type=int, help="trials at once (default: as many as the cluster fits)")
    p.add_argument("--name", help="search id (default: <space>-<timestamp>); with --resume, which search")
    p.add_argument("--resume", action="store_true", help="continue an interrupted search (the latest, or --name)")
    p.add_argument("--sampler", choices=("tpe", "random"), default="tpe",
                   help="Optuna's sampler: tpe (default; multi-objective TPE with several objectives) or random")
    p.add_argument("--scheduler", choices=("asha", "fifo"), default="asha",
                   help="asha (default): stop trials whose probe_score trails at a rung; fifo: every trial runs to "
                        "its end")
    p.add_argument("--grace-period", type=int, default=1, help="ASHA: evaluations before a trial can be stopped")
    p.add_argument("--reduction-factor", type=int, default=2, help="ASHA reduction factor (default 2)")
    p.add_argument("--max-failures", type=int, default=1,
                   help="restarts of a trial from its last checkpoint after a worker, node or trial-driver failure "
                        "(Ray Train and Tune; default 1)")
    p.add_argument("--final-suite", choices=["full", "probe"], default="full",
                   help="the evaluation at a trial's end: full (all seven tasks, default) or probe (PR + SID, "
                        "minutes faster per trial)")
    p.add_argument("--objectives", metavar="METRIC:MODE,...",
                   help="what to optimise, overriding the space file's `objectives` (default: overall_score:max); "
                        "several make a multi-objective search (Optuna's multi-objective TPE), e.g. "
                        "overall_score:max,params:min or overall_score:max,macs_per_second:min. Metrics: "
                        "overall_score (must be included, max), params, macs_per_second; at most 3")
    p.add_argument("--cache-budget", metavar="SIZE",
                   help="most disk the teacher's cached targets may take, e.g. 500G or 2T (default: the free "
                        "space where the cache lives); see `raydistill plan`")
    p.add_argument("--teacher-features", choices=("auto", "cached", "live"), default="auto",
                   help="where trials read the teacher's features and logits: auto (default) caches them when "
                        "they fit the budget and else runs the teacher in every trial; cached refuses what does "
                        "not fit; live always runs it in the trials (units are cached either way)")
    p.add_argument("--confirm", type=int, default=2, metavar="K",
                   help="at the end, score the top K trials again as `compare` does (3 evaluation seeds, each "
                        "head's learning rate tuned on dev) and rank by that confirmed mean (default 2; 0: off; "
                        "each confirmed trial costs about three full evaluations x 3)")
    p.add_argument("--warm-start", metavar="SEARCH_ID[,SEARCH_ID...]",
                   help="start Optuna from the scored trials of earlier searches in this experiment (same corpus "
                        "and teacher; trials whose configuration this space does not give are left out); their "
                        "runs are not copied into this search's")
    _common_run_flags(p)

    p = sub.add_parser("study", help="the papers' claims measured: fixed arms x training seeds, a verdict table",
                       description="Train every arm of a study plan (studies/papers.yaml) at each of its seeds with "
                                   "the same budget and evaluation (Ray Train runs, a Ray Tune grid, MLflow runs of "
                                   "one study run), then print the table: each arm's mean +- spread (max - min over "
                                   "seeds) and each comparison's verdict (agrees / disagrees / inconclusive). "
                                   "Rerunning the same command trains only what is missing (interrupted cells "
                                   "resume from their checkpoints).")
    p.add_argument("--plan", type=Path, required=True, help="study plan YAML (see studies/)")
    p.add_argument("--only", metavar="SUBSET|ID,...",
                   help="only these comparisons (a subset the plan names, e.g. cpu, or comparison ids) and their arms")
    p.add_argument("--name", help="study id (default: the plan's name, +-smoke with --smoke): which study to continue")
    p.add_argument("--max-concurrent", type=int, help="cells at once (default: as many as the cluster fits)")
    p.add_argument("--out", type=Path, help="also write the table, arms.csv, study.json and arms.png here")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--table", action="store_true", help="print the table of what is finished so far; train nothing")
    what.add_argument("--dry-run", action="store_true",
                      help="list the arms (method, params, MACs/s) and the cells to train; start nothing")
    _common_run_flags(p)
    p.set_defaults(experiment="raydistill-study")

    p = sub.add_parser("plan", help="what a search will cache and compute, before anything runs",
                       description="Work out a search's teacher passes, cache sizes (features, logits, units), "
                                   "per-trial FLOPs from the built models, GPU-hours at a stated MFU and the "
                                   "evaluation's cost. Reads the space, the corpus's manifest (or --hours) and the "
                                   "teacher; writes nothing.")
    p.add_argument("--space", type=Path, required=True, nargs="+",
                   help="search-space YAML file (several with --markdown)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--corpus", help="a corpus directory (its train split's audio)")
    what.add_argument("--hours", type=float, help="hours of train audio instead, e.g. 960 for LibriSpeech-960")
    p.add_argument("--teacher", help="a teacher spec to load and count (default: HuBERT-base's architecture)")
    p.add_argument("--trials", type=int, default=8, help="number of trials (default 8)")
    p.add_argument("--smoke", action="store_true", help="plan the space's smoke settings")
    p.add_argument("--cache-budget", metavar="SIZE", help="as for search: e.g. 500G (default: no limit)")
    p.add_argument("--teacher-features", choices=("auto", "cached", "live"), default="auto")
    p.add_argument("--gpu-tflops", type=float, default=312.0,
                   help="the GPU's peak bf16 TFLOP/s, what training runs in (default 312: an A100's dense bf16)")
    p.add_argument("--fp32-tflops", type=float, default=19.5,
                   help="the GPU's peak fp32 TFLOP/s, what the teacher pass and the evaluation run in (default "
                        "19.5: an A100's, without tensor cores: PyTorch leaves TF32 matmuls off)")
    p.add_argument("--mfu", type=float, default=0.12,
                   help="model FLOPs utilisation assumed (default 0.12: published HuBERT-sized training runs at "
                        "8-16 %% of an A100's peak)")
    p.add_argument("--workdir", type=Path, default=Path("runs"),
                   help="where the search would cache (its free space is compared with the cache; default ./runs)")
    p.add_argument("--storage-gbps", type=float,
                   help="read bandwidth of the store the cache lives on, in GB/s (gigabytes), shared by the "
                        "concurrent trials: warns where cached reads would be slower than the teacher run live")
    p.add_argument("--concurrent", type=int, help="trials running at once (default: --trials)")
    p.add_argument("--memory", action="store_true",
                   help="measure each method's training step on this machine's CPU at the space's batch: the GPU "
                        "memory a worker needs (minutes and up to ~19 GB of RAM at base scale; docs/real-scale.md)")
    p.add_argument("--gpu-memory", metavar="SIZE", help="with --memory: a GPU's memory to check the steps against, "
                                                         "e.g. 24G")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--markdown", action="store_true",
                   help="print README's table: a row per --space, planned with the teacher's features cached and live")

    p = sub.add_parser("doctor", help="pre-flight check of a cluster before a search (search runs it too)",
                       description="Check, on every node of the Ray cluster: torch/torchaudio/CUDA agree and torch "
                                   "uses the GPUs the OS shows, faiss imports (and its build), the workdir is seen "
                                   "and written by all; then the MLflow store, Ray's token authentication and the "
                                   "free space. One line per check (ok, warn, FAIL); exit 2 on a failure.")
    p.add_argument("--address", help="the Ray cluster (auto, host:6379, ray://host:10001); default: a local one")
    p.add_argument("--workdir", type=Path, default=Path("runs"), help="the search's workdir (default ./runs)")
    p.add_argument("--mlflow-uri", help="MLflow tracking URI (default: sqlite:///<workdir>/mlflow.db)")
    p.add_argument("--need", metavar="SIZE", help="free space the search needs in the workdir, e.g. 800G "
                                                  "(`raydistill plan` says how much)")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("train", help="train one configuration (e.g. an exported one) on Ray Train",
                       description="Rerun one configuration file (as written by `raydistill export`).")
    p.add_argument("--config", type=Path, required=True, help="configuration YAML (corpus, teacher, train)")
    p.add_argument("--allow-mismatch", action="store_true",
                   help="train even if the corpus or teacher differs from the one the file's provenance records "
                        "(by default such a file is refused)")
    _common_run_flags(p)

    p = sub.add_parser("report", help="a search's leaderboard in the terminal, and its report (figures, table)",
                       description="Print a search's trials sorted by its objective, with their status and the "
                                   "reference runs (works while the search runs). --out DIR also writes the "
                                   "report there (trials.csv, importances.json, figures/*.png, report.html); "
                                   "--log rebuilds it on the search's MLflow run (a search writes it at its end).")
    _store_flags(p, search_help="the search id (default: the experiment's latest search)")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table",
                   help="the leaderboard's format (default table)")
    p.add_argument("--out", type=Path, help="write the full report into this directory (created; must be empty)")
    p.add_argument("--log", action="store_true", help="(re)write the report on the search's MLflow run")

    p = sub.add_parser("export", help="write the best configurations and student of an experiment",
                       description="Export the best trial's configuration (rerunnable with `raydistill train`), "
                                   "the top-K configurations and the best student checkpoint. With --pareto, also "
                                   "the Pareto set of the finished trials (none beaten on every objective by "
                                   "another): OUT/pareto/NN-<run>.yaml per trial, same format as best.yaml, and "
                                   "OUT/pareto.json (run ids, objective values, config files). The objectives are "
                                   "the search's (its MLflow parent run's `objectives`), or --objectives.")
    _store_flags(p, search_help="only trials of this search id")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--top", type=int, default=5, help="how many configurations (default 5)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("--pareto", action="store_true",
                   help="also write the Pareto set of the finished trials (OUT/pareto/, OUT/pareto.json)")
    p.add_argument("--objectives", metavar="METRIC:MODE,...",
                   help="with --pareto: the objectives to compare, e.g. overall_score:max,params:min "
                        "(default: those of the trials' search; --search if they come from several)")

    p = sub.add_parser("evaluate", help="score a student checkpoint SUPERB-style (prints JSON)")
    p.add_argument("--checkpoint", type=Path, required=True, help="a student.pt file")
    p.add_argument("--suite", choices=("smoke", "probe", "full"), default="full",
                   help="budget: probe (PR + SID, fast), full (every task), smoke (tiny)")
    p.add_argument("--tasks", metavar="TASK,...",
                   help="only these tasks, from pr,sid,ks,ic,asr,asv,qbe (default: the suite's)")
    p.add_argument("--lr-grid", metavar="SCALE,...",
                   help="tune every head's learning rate on dev over lr × these scales, as SUPERB does "
                        "(e.g. 0.3,1,3; default: the suite's fixed learning rates)")
    p.add_argument("--corpus", help="corpus directory (default: the embedded corpus in --workdir)")
    p.add_argument("--workdir", type=Path, default=Path("runs"))
    p.add_argument("--smoke", action="store_true", help="use the smoke corpus")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("compare", help="teacher vs a student vs its random init vs FBank, over several seeds (JSON)",
                       description="Score the teacher, a distilled student, the same student at random "
                                   "initialisation and FBank features at several evaluation seeds, and judge what "
                                   "distillation claims: teacher > student and student > random init, each gap "
                                   "larger than the seed spread ('holds'). The gaps of the student and of random "
                                   "init to FBank are reported without a verdict ('unjudged').")
    p.add_argument("--checkpoint", type=Path, required=True, help="a distilled student.pt (e.g. from export)")
    p.add_argument("--teacher", default=None, help="the teacher (default: the one the checkpoint names)")
    p.add_argument("--suite", choices=("smoke", "probe", "full"), default="full")
    p.add_argument("--tasks", metavar="TASK,...", help="only these tasks (default: the suite's)")
    p.add_argument("--lr-grid", metavar="SCALE,...", default="0.3,1,3",
                   help="tune each head's learning rate on dev over lr × these scales, as SUPERB does "
                        "(default 0.3,1,3; 1 for the suite's fixed learning rates, a third of the time)")
    p.add_argument("--seeds", default="0,1,2", help="evaluation seeds (default 0,1,2)")
    p.add_argument("--jobs", type=int, default=1,
                   help="evaluations run at once, each in its own process with its share of the cores "
                        "(default 1; 2 is faster on 2 cores)")
    p.add_argument("--corpus", help="corpus directory (default: the embedded corpus in --workdir)")
    p.add_argument("--workdir", type=Path, default=Path("runs"))
    p.add_argument("--smoke", action="store_true", help="use the smoke corpus and teacher")

    p = sub.add_parser("convert", help="a student as an s3prl upstream or a Hugging Face HubertModel",
                       description="Write a student checkpoint as an s3prl upstream folder (expert.py in plain "
                                   "PyTorch, config.json, model.pt, hubconf.py: all hidden states at a 20 ms "
                                   "stride; no raydistill needed to load it) or, for HuBERT-shaped "
                                   "students without attention reuse, as a transformers HubertModel directory "
                                   "(config.json + model.safetensors).")
    p.add_argument("--checkpoint", type=Path, required=True, help="a student.pt file")
    p.add_argument("--to", choices=("s3prl", "hf"), required=True, help="the format")
    p.add_argument("--out", type=Path, required=True, help="the directory to write (must not exist)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")

    p = sub.add_parser("corpus", help="build or import a corpus")
    csub = p.add_subparsers(dest="corpus_command", metavar="ACTION", required=True)
    c = csub.add_parser("synth", help="synthesise the embedded espeak-ng corpus")
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--smoke", action="store_true", help="the tiny corpus used by --smoke runs")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--config", type=Path, metavar="FILE",
                   help="a YAML mapping of corpus options over the default (or --smoke) preset, e.g. "
                        "'reverb: speaker', 'noise_per: speaker', 'flite_frac: 0.3' (raydistill/corpus/synth.py: "
                        "CorpusConfig); search with the result through --corpus DIR")
    c = csub.add_parser("librispeech", help="turn a LibriSpeech-layout directory into a raydistill corpus")
    c.add_argument("--root", type=Path, required=True, help="a subset dir (speaker dirs inside) or a dir of subsets")
    c.add_argument("--out", type=Path, required=True, help="where to write manifest.jsonl / corpus.json")
    c.add_argument("--split", choices=("train", "dev", "test"), help="split of a single-subset root (default: from its name, e.g. dev-clean -> dev; else train)")
    c.add_argument("--no-g2p", action="store_true", help="no phone labels (skip espeak-ng G2P of the transcripts)")
    c = csub.add_parser("info", help="print a corpus's summary (JSON)")
    c.add_argument("dir", type=Path)

    p = sub.add_parser("teacher", help="pretrain or inspect the teacher")
    tsub = p.add_subparsers(dest="teacher_command", metavar="ACTION", required=True)
    t = tsub.add_parser("pretrain", help="pretrain the embedded teacher on a corpus (HuBERT iteration 1; cached)")
    t.add_argument("--workdir", type=Path, default=Path("runs"))
    t.add_argument("--corpus", help="corpus directory (default: the embedded corpus)")
    t.add_argument("--smoke", action="store_true")
    t = tsub.add_parser("info", help="load a teacher and print its description (JSON; mask_embedding: whether it "
                                     "carries a trained mask embedding, which masking distillation needs)")
    t.add_argument("spec", help="raydistill:CKPT | torchaudio:STATE_DICT[#arch] | hf:DIR; " + MASK_EMB_HELP)

    p = sub.add_parser("describe", help="sizes of a student: parameters (inference / training) and MACs per second",
                       description="Build a preset's or a config file's student and count its parameters "
                                   "(params: what inference keeps; params_train: with training-only heads) and "
                                   "its multiply-accumulates per second of 16 kHz audio.")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--preset", help="a paper student: " + ", ".join(_preset_names()))
    what.add_argument("--config", type=Path, help="a config file (as export writes, or a bare train config)")
    p.add_argument("--teacher-shape", default="tiny-teacher", choices=("tiny-teacher", "hubert-base", "hubert-large"),
                   help="the teacher a --config student distils (sizes its heads; default: the embedded teacher)")
    p.add_argument("--json", action="store_true", help="print JSON (the default output is JSON too; kept for scripts)")
    return parser


def _preset_names() -> list[str]:
    from raydistill.presets import RUN_PRESETS  # lazy: CLI start-up

    return list(RUN_PRESETS)


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = _dispatch(args)
    except UserError as e:
        print(f"raydistill: error: {getattr(e, 'cause', None) or e}", file=sys.stderr)  # a Ray task's: its cause
        return 2
    except RunFailed as e:
        print(f"raydistill: error: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # a full disk under a write raydistill does not make itself (MLflow's, Ray's)
        full = _disk_full_elsewhere(e, Path(getattr(args, "workdir", None) or "."), getattr(args, "mlflow_uri", None))
        if full is None:
            raise
        print(f"raydistill: error: {full}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("raydistill: interrupted (a search continues with --resume, a study by rerunning its command)", file=sys.stderr)
        return 130
    if result is not None:
        print(json.dumps(result, indent=2, default=str))
    return 0


def _disk_full_elsewhere(error: Exception, workdir: Path, mlflow_uri: Optional[str] = None) -> Optional[str]:
    """The one line for a full disk met by a write of a library (an ``OSError`` ENOSPC/EDQUOT
    naming its file; SQLite's "database or disk is full" under MLflow's store, ``mlflow_uri`` or
    the workdir's, or Optuna's), or None for any other error."""
    chain, seen = [], error
    while seen is not None and len(chain) < 10:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    for e in chain:
        if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS:
            return str(disk_full(e, e.filename or workdir / "?"))
        if type(e).__name__ == "OperationalError" and "database or disk is full" in str(e):
            if any(type(x).__name__ == "MlflowException" for x in chain):
                uri = mlflow_uri or f"sqlite:///{workdir.absolute() / 'mlflow.db'}"
                store = Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else uri
            else:
                store = workdir.absolute() / "optuna.db"
            return str(disk_full(OSError(errno.ENOSPC, str(e)), store))
    return None


def _dispatch(args) -> Optional[dict]:
    if args.command == "search":
        from raydistill.commands.search import SearchOptions, run_search  # lazy: CLI start-up

        run_search(SearchOptions(
            space=args.space, trials=args.trials, max_concurrent=args.max_concurrent, workers=args.workers,
            cpus_per_worker=args.cpus_per_worker, gpus_per_worker=args.gpus_per_worker, workdir=args.workdir,
            mlflow_uri=args.mlflow_uri, experiment=args.experiment, address=args.address, corpus=args.corpus,
            teacher=args.teacher or "embedded", smoke=bool(args.smoke), name=args.name, resume=args.resume,
            seed=args.seed, grace_period=args.grace_period, reduction_factor=args.reduction_factor,
            objectives=args.objectives, final_suite=args.final_suite, max_failures=args.max_failures,
            cache_budget=args.cache_budget, teacher_features=args.teacher_features, warm_start=args.warm_start,
            confirm=args.confirm, sampler=args.sampler, scheduler=args.scheduler,
        ))
        return None  # run_search printed its summary
    if args.command == "study":
        return _study(args)
    if args.command == "plan":
        return _plan(args)
    if args.command == "doctor":
        return _doctor(args)
    if args.command == "train":
        from raydistill.commands.train import TrainOptions, run_train  # lazy: CLI start-up

        return run_train(TrainOptions(
            config=args.config, workdir=args.workdir, mlflow_uri=args.mlflow_uri, experiment=args.experiment,
            address=args.address, smoke=args.smoke, corpus=args.corpus, teacher=args.teacher, workers=args.workers,
            cpus_per_worker=args.cpus_per_worker, gpus_per_worker=args.gpus_per_worker, seed=args.seed,
            allow_mismatch=args.allow_mismatch,
        ))
    if args.command == "report":
        return _report(args)
    if args.command == "convert":
        from raydistill.convert import convert  # lazy: CLI start-up

        _check_out(args.out)
        return {"out": str(convert(args.checkpoint, args.out, args.to, force=args.force)), "format": args.to}
    if args.command == "export":
        from raydistill.export import export  # lazy: CLI start-up

        uri = _check_export(args)
        return export(uri, args.experiment, args.out, top_k=args.top, search_id=args.search, force=args.force,
                      pareto=args.pareto, objectives=args.objectives)
    if args.command == "evaluate":
        return _evaluate(args)
    if args.command == "compare":
        return _compare(args)
    if args.command == "corpus":
        return _corpus(args)
    if args.command == "teacher":
        return _teacher(args)
    if args.command == "describe":
        return _describe(args)
    raise AssertionError(args.command)


def _study(args) -> Optional[dict]:
    from raydistill.commands.study import StudyOptions, describe_study, run_study, study_table  # lazy: CLI start-up

    if args.out is not None:
        _check_out(args.out)
    opts = StudyOptions(
        plan=args.plan, only=args.only, name=args.name, workers=args.workers, cpus_per_worker=args.cpus_per_worker,
        gpus_per_worker=args.gpus_per_worker, max_concurrent=args.max_concurrent, workdir=args.workdir,
        mlflow_uri=args.mlflow_uri, experiment=args.experiment, address=args.address, corpus=args.corpus,
        teacher=args.teacher or "embedded", smoke=bool(args.smoke), seed=args.seed, out=args.out)
    if args.dry_run:
        return describe_study(opts)
    if args.table:
        print(study_table(opts).markdown(), end="")
        return None
    return run_study(opts)


def _doctor(args) -> Optional[dict]:
    from raydistill.doctor import as_json, run_checks  # lazy: CLI start-up
    from raydistill.prepare import Workdir, parse_bytes  # lazy: CLI start-up
    from raydistill.search.cluster import check_address, check_address_form, connect  # lazy: CLI start-up

    need = parse_bytes(args.need, "--need") if args.need is not None else None
    workdir = Workdir(args.workdir).check()
    check_address_form(args.address)
    check_address(args.address)
    checks = run_checks(connect(args.address), workdir.root, args.mlflow_uri or workdir.mlflow_uri, args.address, need)
    if args.json:
        print(json.dumps(as_json(checks), indent=2))
    else:
        print("\n".join(c.line() for c in checks))
    failed = [c for c in checks if c.status == "FAIL"]
    if failed:
        raise UserError(f"{len(failed)} check(s) failed: {', '.join(c.name for c in failed)}")
    return None


def _plan(args) -> Optional[dict]:
    from raydistill.commands.cost import CorpusShape, format_plan, make_plan, markdown_table  # lazy: CLI start-up
    from raydistill.prepare import Workdir, available_bytes, check_corpus, parse_bytes  # lazy: CLI start-up
    from raydistill.search.space import load_space  # lazy: CLI start-up

    for flag, value in (("--trials", args.trials), ("--concurrent", args.concurrent)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be >= 1, found {value}")
    for flag, value in (("--gpu-tflops", args.gpu_tflops), ("--fp32-tflops", args.fp32_tflops), ("--mfu", args.mfu),
                        ("--storage-gbps", args.storage_gbps)):
        if value is not None and (not (math.isfinite(value) and value > 0) or (flag == "--mfu" and value > 1)):
            raise UserError(f"{flag} must be a number > 0{' and <= 1' if flag == '--mfu' else ''}, found {value}")
    if len(args.space) > 1 and not args.markdown:
        raise UserError("--space takes one file (several only with --markdown)")
    if args.gpu_memory is not None and not args.memory:
        raise UserError("--gpu-memory checks the measured steps: add --memory")
    gpu_memory = parse_bytes(args.gpu_memory, "--gpu-memory") if args.gpu_memory is not None else None
    spaces = [load_space(path, smoke=args.smoke) for path in args.space]
    if args.corpus:
        corpus = CorpusShape.from_corpus(check_corpus(args.corpus))
    else:
        corpus = CorpusShape.from_hours(960.0 if args.hours is None else args.hours)
    budget = parse_bytes(args.cache_budget) if args.cache_budget else None
    free = available_bytes(Workdir(args.workdir).check().cache)

    def plan(space, mode, memory):
        return make_plan(space, corpus, trials=args.trials, teacher_spec=args.teacher, budget=budget, free=free,
                         mode=mode, gpu_tflops=args.gpu_tflops, fp32_tflops=args.fp32_tflops, mfu=args.mfu,
                         storage_gbps=args.storage_gbps, concurrent=args.concurrent, memory=memory,
                         gpu_memory=gpu_memory)

    if args.markdown:
        print(markdown_table([(plan(s, "cached", args.memory), plan(s, "live", False)) for s in spaces]))
        return None
    result = plan(spaces[0], args.teacher_features, args.memory)
    if args.json:
        return result
    print(format_plan(result))
    return None


def _report(args) -> None:
    """The leaderboard on stdout; with --out / --log, the report too."""
    from raydistill.report import write  # lazy: CLI start-up
    from raydistill.report.collect import collect  # lazy: CLI start-up
    from raydistill.report.leaderboard import render  # lazy: CLI start-up
    from raydistill.tracking.mlflow import open_experiment  # lazy: CLI start-up

    if args.out is not None:
        _check_out(args.out)
        if args.out.exists() and any(args.out.iterdir()):
            raise UserError(f"--out {args.out} is not empty: choose another directory")
    client, experiment_id = open_experiment(_store_uri(args), args.experiment)
    if args.out is None and not args.log:
        sys.stdout.write(render(collect(client, experiment_id, args.search), args.format))
        return None
    report = write(client, experiment_id, args.search, args.out, log_to_run=args.log)
    sys.stdout.write(render(report.data, args.format))
    if args.out is not None:
        print(f"report written to {args.out} in {report.seconds:.1f}s (open {args.out / 'report.html'})",
              file=sys.stderr)
    return None


def _store_uri(args) -> str:
    """The MLflow store ``--mlflow-uri`` / ``--workdir`` name, checked to exist before it is
    opened (opening a SQLite URI creates the database)."""
    from raydistill.prepare import Workdir, check_mlflow_uri  # lazy: CLI start-up

    if not args.experiment.strip():
        raise UserError("--experiment must not be empty")
    if args.search is not None and not args.search.strip():
        raise UserError("--search must not be empty")
    if args.mlflow_uri:
        check_mlflow_uri(args.mlflow_uri, existing=True)
        return args.mlflow_uri
    workdir = Workdir(args.workdir).check()
    if not (workdir.root / "mlflow.db").is_file():
        raise UserError(f"no MLflow store at {workdir.mlflow_uri}: pass --mlflow-uri or the --workdir of your search")
    return workdir.mlflow_uri


def _check_export(args) -> str:
    """Every export flag and the MLflow store they name, before the store is opened (opening a
    SQLite URI creates the database); the store's URI."""
    if args.objectives is not None:
        if not args.pareto:
            raise UserError("--objectives chooses what --pareto compares: pass --pareto with it")
        parse_objectives(args.objectives, "--objectives")
    if args.top < 1:
        raise UserError(f"--top must be >= 1, found {args.top}")
    _check_out(args.out)
    return _store_uri(args)


def _check_out(path: Path) -> None:
    """A UserError unless ``--out`` is a directory or could be created as one (not a file, not under one)."""
    from raydistill.prepare import check_directory  # lazy: CLI start-up

    check_directory(path, "--out")


def _check_seed(seed: int, flag: str) -> int:
    from raydistill.commands.run import MAX_SEED  # lazy: CLI start-up

    if not 0 <= seed <= MAX_SEED:
        raise UserError(f"{flag} must be between 0 and {MAX_SEED}, found {seed}")
    return seed


def _describe(args) -> dict:
    from raydistill.config import TrainConfig  # lazy: CLI start-up
    from raydistill.methods import describe  # lazy: CLI start-up
    from raydistill.presets import TEACHERS, preset  # lazy: CLI start-up

    if args.preset:
        teacher, config = preset(args.preset)
        name = args.preset
    else:
        doc = read_yaml(args.config, "config file")
        config = doc.get("train", doc) if isinstance(doc, dict) else doc
        teacher, name = TEACHERS[args.teacher_shape], str(args.config)
    built = TrainConfig.from_dict(config, where=name)
    return {"name": name, **describe(built, teacher)}


def _budget(args):
    from raydistill.evaluate.suite import EvalBudget  # lazy: CLI start-up

    budget = EvalBudget.named(args.suite)
    if args.tasks:
        budget = budget.with_tasks(t.strip() for t in args.tasks.split(",") if t.strip())
    if args.lr_grid:
        try:
            scales = [float(x) for x in args.lr_grid.split(",") if x.strip()]
        except ValueError:
            raise UserError(f"--lr-grid must be comma-separated numbers, found {args.lr_grid!r}") from None
        if not all(math.isfinite(x) and x > 0 for x in scales):
            raise UserError(f"--lr-grid must be positive finite numbers, found {args.lr_grid!r}")
        budget = budget.with_lr_scales(scales)
    return budget


# What `compare` judges: what distillation claims. FBank is reported beside them without a verdict
# (the SUPERB protocol does not order random deep features against FBank).
CLAIMS = (("teacher", "student"), ("student", "random_init"))
UNJUDGED = (("student", "fbank"), ("random_init", "fbank"))


def _compare(args) -> dict:
    from raydistill.evaluate.compare import compare_upstreams  # lazy: CLI start-up
    from raydistill.evaluate.upstream import FBankUpstream, HubertUpstream  # lazy: CLI start-up
    from raydistill.methods import load_student, student_model  # lazy: CLI start-up
    from raydistill.prepare import Workdir, check_corpus, default_device, resolve_corpus, resolve_teacher  # lazy: CLI start-up
    from raydistill.teacher.sources import load_teacher, parse_spec  # lazy: CLI start-up

    budget = _budget(args)
    try:
        seeds = [_check_seed(int(s), "--seeds") for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--seeds must be comma-separated integers, found {args.seeds!r}") from None
    if not seeds:
        raise UserError("--seeds is empty")
    if len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds repeats a seed ({args.seeds}): the spread over seeds needs distinct ones")
    if args.jobs < 1:
        raise UserError(f"--jobs must be >= 1, found {args.jobs}")
    workdir = Workdir(args.workdir).check()
    # every file is read before the embedded corpus or teacher is built
    config, module, teacher_info = load_student(args.checkpoint)
    checked_corpus = check_corpus(args.corpus)
    spec = args.teacher or teacher_info.get("spec") or "embedded"
    checked_teacher = None if parse_spec(spec)[0] == "embedded" else load_teacher(spec)
    corpus = resolve_corpus(args.corpus, workdir, smoke=args.smoke, checked=checked_corpus)
    device = default_device()
    teacher = resolve_teacher(spec, workdir, corpus, smoke=args.smoke, device=device, checked=checked_teacher)
    random_init = student_model(config, teacher.info, seed=0)
    upstreams = [HubertUpstream(teacher.model, name="teacher"), HubertUpstream(module.model, name="student"),
                 HubertUpstream(random_init, name="random_init"), FBankUpstream()]
    result = compare_upstreams([u.to(device) if hasattr(u, "to") else u for u in upstreams], corpus, budget, seeds,
                               device=device, jobs=args.jobs, claims=CLAIMS, unjudged=UNJUDGED)
    return {"checkpoint": str(args.checkpoint), "corpus": str(corpus.root), **result}


def _evaluate(args) -> dict:
    from raydistill.evaluate.suite import evaluate_upstream  # lazy: CLI start-up
    from raydistill.evaluate.upstream import HubertUpstream  # lazy: CLI start-up
    from raydistill.methods import load_student  # lazy: CLI start-up
    from raydistill.prepare import Workdir, check_corpus, default_device, resolve_corpus  # lazy: CLI start-up

    budget = _budget(args)
    _check_seed(args.seed, "--seed")
    workdir = Workdir(args.workdir).check()
    config, module, teacher = load_student(args.checkpoint)
    checked_corpus = check_corpus(args.corpus)  # before the embedded corpus would be built
    corpus = resolve_corpus(args.corpus, workdir, smoke=args.smoke, checked=checked_corpus)
    device = default_device()
    scores = evaluate_upstream(HubertUpstream(module.model, name="student").to(device), corpus,
                               budget, seed=args.seed, device=device)
    return {"checkpoint": str(args.checkpoint), "suite": args.suite, "corpus": str(corpus.root), **scores}


def _corpus(args) -> dict:
    from raydistill.corpus import Corpus, CorpusConfig, build_corpus, read_librispeech  # lazy: CLI start-up

    if args.corpus_command == "synth":
        config = _corpus_config(CorpusConfig.smoke() if args.smoke else CorpusConfig.default(), args)
        _check_out(args.out)
        corpus = build_corpus(config, args.out)
    elif args.corpus_command == "librispeech":
        _check_out(args.out)
        corpus = read_librispeech(args.root, args.out, split=args.split, g2p=not args.no_g2p)
    else:
        corpus = Corpus.load(args.dir)
    info = {k: v for k, v in corpus.info.items() if k not in ("phones", "speakers", "config")}
    return {"root": str(corpus.root), "key": corpus.key, "utterances": len(corpus.utterances),
            "speakers": len({u.speaker for u in corpus.utterances}), "phones": len(corpus.phones), **info}


def _corpus_config(preset, args):
    """``preset`` with the options of ``--config`` and ``--seed`` over it; bad ones are a UserError."""
    import dataclasses

    from raydistill.config import from_mapping  # lazy: CLI start-up
    from raydistill.utils import read_yaml_mapping  # lazy: CLI start-up

    options = {f.name: getattr(preset, f.name) for f in dataclasses.fields(preset)}
    changes = read_yaml_mapping(args.config, "corpus config", options, "a mapping of corpus options",
                                "corpus option") if args.config else {}
    if args.seed:
        changes["seed"] = args.seed
    return from_mapping(type(preset), options | changes, args.config or "corpus")


def _teacher(args) -> dict:
    from raydistill.prepare import Workdir, check_corpus, default_device, resolve_corpus, resolve_teacher  # lazy: CLI start-up
    from raydistill.teacher.sources import load_teacher, parse_spec  # lazy: CLI start-up

    if args.teacher_command == "pretrain":
        Workdir(args.workdir).check()
        checked_corpus = check_corpus(args.corpus)  # before anything is written
        workdir = Workdir(args.workdir).check_writable()
        corpus = resolve_corpus(args.corpus, workdir, smoke=args.smoke, checked=checked_corpus)
        teacher = resolve_teacher("embedded", workdir, corpus, smoke=args.smoke, device=default_device())
    else:
        if parse_spec(args.spec)[0] == "embedded":
            raise UserError("teacher info reads a teacher file: the embedded teacher is pretrained (and "
                            "described) by `raydistill teacher pretrain`")
        teacher = load_teacher(args.spec)
    return teacher.describe() | {"has_head": teacher.head is not None}


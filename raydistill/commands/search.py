"""``raydistill search``: Ray Tune + OptunaSearch (TPE) + ASHA over a search-space file.

Order of work, cheapest checks first so bad input fails in seconds:

1. validate every option and input without writing anything (:meth:`SearchOptions.validate`):
   flags, workdir, search space, search id, MLflow store, Ray address, corpus and teacher;
2. corpus, teacher and teacher targets (once per search, cached across searches);
3. reference runs: the teacher and FBank, scored like every trial;
4. the trials: each one a Ray Train run of the distillation loop (``search/trial.py``);
   ASHA compares the cheap ``probe_score`` at every rung, Optuna learns from the final
   ``overall_score`` (trials ASHA stopped are told to Optuna as pruned); with several
   objectives (``overall_score`` and the student's ``params`` / ``macs_per_second``),
   Optuna's multi-objective TPE learns their Pareto front (``search/objectives.py``);
5. trials that ASHA stopped get the full evaluation from their last checkpoint, so every
   trial carries the same scores; then the random-init reference of the best architecture;
6. a summary: best trial, the teacher and random-init scores beside it, how to open MLflow.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Optional

import optuna

from raydistill import provenance
from raydistill.commands.cost import CorpusShape, choose_teacher_features
from raydistill.commands.run import NAME, Inputs, RunContext, TunedOptions, make_tuner, open_run
from raydistill.config import TrainConfig
from raydistill.corpus.manifest import Corpus
from raydistill.errors import RunFailed, UserError
from raydistill.teacher.info import TeacherInfo
from raydistill.prepare import Workdir, available_bytes, human_bytes, masks_teacher_input, parse_bytes
from raydistill.report import write as write_search_report
from raydistill.search.confirm import confirm_top
from raydistill.search.objectives import format_objectives, parse_objectives, resolve_objectives
from raydistill.search.posteval import evaluate_stopped_trials
from raydistill.search.setup import TrialSetup
from raydistill.search.space import SearchSpace, load_space
from raydistill.search.trial import remove_stale_staging, student_size, trial_config, trial_driver
from raydistill.search.warmstart import check_same_data, earlier_searches, parse_ids, warm_trials as rebuild_warm_trials
from raydistill.targets.store import store_root
from raydistill.tracking.mlflow import (KIND, SEARCH_ID, find_run, open_experiment, ranked, run_config, scored,
                                        trial_runs)
from raydistill.utils import log, one_line, stable_hash


class Checked(NamedTuple):
    """What :meth:`SearchOptions.validate` read and checked, for the search to reuse."""

    space: SearchSpace
    objectives: dict
    search_id: str
    inputs: Inputs  # the corpus and teacher, checked
    features: Optional[str]  # "cached" | "live": where trials read the teacher's features (None: decided later)
    warm: dict  # --warm-start: {search id: its MLflow search run}

    @property
    def corpus(self) -> Optional[Corpus]:
        return self.inputs.corpus  # None: the embedded corpus (synthesised by open_run)

    @property
    def teacher(self):
        return self.inputs.teacher  # None: the embedded teacher (pretrained by open_run)


@dataclass(kw_only=True)
class SearchOptions(TunedOptions):
    """``raydistill search``'s options (the shared ones: :class:`~raydistill.commands.run.RunOptions`;
    resources left open default to the space's)."""

    space: Path
    trials: int = 8
    resume: bool = False
    grace_period: int = 1  # ASHA: evaluations before a trial may be stopped
    reduction_factor: int = 2
    objectives: Optional[str] = None  # "overall_score:max,params:min"; default: the space file's
    final_suite: str = "full"  # what scores a trial at its end: "full" (seven tasks) or "probe" (PR + SID)
    cache_budget: Optional[str] = None  # most disk the teacher cache may take ("500G"); default: the free space
    teacher_features: str = "auto"  # auto | cached | live (commands/cost.py: choose_teacher_features)
    warm_start: Optional[str] = None  # "ID[,ID...]": earlier searches whose scored trials seed Optuna
    sampler: str = "tpe"  # tpe | random
    scheduler: str = "asha"  # asha | fifo (every trial runs to its end)
    confirm: int = 2  # the top K trials scored again over seeds with tuned head learning rates (0: none)

    preflight = True  # every node's software and view of the workdir, checked before any work

    def validate(self) -> Checked:
        """Every check of the options and of the files they name, writing nothing and starting
        nothing (cheapest first): bad input fails in seconds and leaves the workdir as it was.
        Resources the flags leave open are filled in from the space's ``resources``."""
        space = load_space(self.space, smoke=self.smoke)
        self.check_run(space.resources)
        for flag, value, low in (("--trials", self.trials, 1), ("--confirm", self.confirm, 0),
                                 ("--grace-period", self.grace_period, 1),
                                 ("--reduction-factor", self.reduction_factor, 2)):
            if value < low:
                raise UserError(f"{flag} must be >= {low}, found {value}")
        for flag, value, allowed in (("--sampler", self.sampler, ("tpe", "random")),
                                     ("--scheduler", self.scheduler, ("asha", "fifo"))):
            if value not in allowed:
                raise UserError(f"{flag} must be {' or '.join(allowed)}, found {value!r}")
        if self.final_suite not in ("full", "probe"):
            raise UserError(f"--final-suite must be full or probe, found {self.final_suite!r}")
        if self.name is not None and not NAME.fullmatch(self.name):
            raise UserError(f"--name {self.name!r}: a search id is letters, digits, '.', '_' and '-' "
                            "(starting with a letter or digit)")
        objectives = resolve_objectives(self.objectives, space.objectives)
        search_id = _search_id(Workdir(self.workdir), self)
        if self.teacher_features not in ("auto", "cached", "live"):
            raise UserError(f"--teacher-features must be auto, cached or live, found {self.teacher_features!r}")
        if self.cache_budget is not None:
            parse_bytes(self.cache_budget)  # a bad size fails here, before the corpus or teacher is read
        infos = []
        inputs = self.check_inputs(self.corpus, self.teacher, smoke=self.smoke,
                                   needs=lambda info: infos.append(info) or space.teacher_needs(info),
                                   masked=masks_teacher(space),
                                   what=f"search space {self.space} (armhubert with arm.masking)")
        features = None
        if inputs.corpus is not None:  # the cache's size is known now: switch to live or refuse before writing anything
            features = self.choose_features(space, infos[0], inputs.corpus,
                                            inputs.teacher.key if inputs.teacher else None)
        self.check_services()
        return Checked(space, objectives, search_id, inputs, features, self.check_warm_start())

    def check_warm_start(self) -> dict:
        """The earlier searches ``--warm-start`` names, found in this experiment (read only)."""
        if self.warm_start is None:
            return {}
        ids = parse_ids(self.warm_start, NAME)
        if self.resume:
            raise UserError("--warm-start starts a new search; a resumed one keeps the study it had (drop --warm-start)")
        client, experiment_id = open_experiment(self.mlflow_store, self.experiment,
                                                what="--warm-start: ")
        return earlier_searches(client, experiment_id, self.experiment, ids)

    def choose_features(self, space: SearchSpace, info: TeacherInfo, corpus: Corpus,
                        teacher_key: Optional[str]) -> str:
        """``cached`` or ``live`` for this search's trials (or a UserError): the cache's size
        against ``--cache-budget`` and the free space (commands/cost.py)."""
        workdir = Workdir(self.workdir)
        existing = 0
        if teacher_key is not None:  # what an earlier search already cached needs no new space
            root = store_root(workdir.cache, teacher_key, corpus.key)
            existing = sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) if root.is_dir() else 0
        choice, items, why = choose_teacher_features(
            space, info, CorpusShape.from_corpus(corpus).frames, mode=self.teacher_features,
            budget=parse_bytes(self.cache_budget) if self.cache_budget is not None else None,
            free=available_bytes(workdir.cache), existing=existing)
        log(f"teacher features: {choice} in the trials; cache {human_bytes(sum(i['bytes'] for i in items))} ({why})")
        return choice


def masks_teacher(space: SearchSpace) -> bool:
    """Whether a trial of ``space`` may feed the teacher masked input: ``armhubert`` among its
    methods, with ``arm.masking`` on in its base or among a parameter's choices."""
    if "armhubert" not in space.methods():
        return False
    if masks_teacher_input(TrainConfig.from_dict(space.base_for("armhubert"), where=f"{space.path}: base")):
        return True
    return any(p.path == "arm.masking" and any(v is True for v in p.values_to_check()) for p in space.params)


def run_search(opts: SearchOptions) -> dict:
    started = time.monotonic()
    space, objectives, search_id, inputs, features, warm = opts.validate()  # nothing written before
    ctx = open_run(opts, inputs, tracker_id=search_id)
    workdir, tracker, corpus, teacher = ctx.workdir, ctx.tracker, ctx.corpus, ctx.teacher
    trials = opts.trials
    if opts.resume:
        objectives, trials = _resumed(tracker, objectives, trials, explicit=opts.objectives is not None)
    if features is None:  # the embedded corpus: its size is known once it is built
        features = opts.choose_features(space, ctx.info, corpus, teacher.key)
    if features == "live":
        space = space.with_base({"teacher_features": "live"})
    warm_trials = []
    if warm:  # refused before anything of this search is written
        check_same_data(warm, corpus.key, teacher.key)
        warm_trials = rebuild_warm_trials(tracker.client, tracker.experiment, warm, space, objectives)
    store = ctx.targets(space.teacher_needs(ctx.info, live=features == "live"))
    budgets = ctx.budgets(opts.final_suite, space.tasks)  # the tasks the space's corpus has labels for
    prep_seconds = time.monotonic() - started

    tracker.start_search(search_id, {
        "space": str(opts.space), "method": ",".join(space.methods()), "trials": opts.trials, "smoke": opts.smoke,
        "teacher": teacher.spec, "teacher_key": teacher.key, "corpus_spec": opts.corpus or "embedded",
        "corpus": str(corpus.root), "corpus_key": corpus.key,
        "workers": opts.workers, "seed": opts.seed, "objectives": format_objectives(objectives),
        "teacher_features": features, "budget": budgets["full"], "sampler": opts.sampler, "scheduler": opts.scheduler,
        "confirm": opts.confirm,
        **({"warm_start": ",".join(warm), "warm_start_trials": len(warm_trials)} if warm else {}),
    }, space_file=Path(opts.space),
        provenance=provenance.record(corpus_key=corpus.key, teacher_key=teacher.key, search_id=search_id),
        artifacts={"search_space.yaml": space.describe(), "base.yaml": space.base})
    try:
        baselines = ctx.baselines(budgets)
        summary = {"search_id": search_id, "experiment": opts.experiment, "mlflow_uri": ctx.uri,
                   "objectives": objectives, "experiment_id": tracker.experiment,
                   "teacher": baselines.log("teacher"), "fbank": baselines.log("fbank")}
        tracker.link_references(baselines.run_ids)
        setup = ctx.setup(search_id, store, budgets, base=space.base, method_bases=space.method_bases,
                          references=baselines.references())
        tune_started = time.monotonic()
        results = _tune(ctx, space, setup, search_id, objectives, warm_trials)
        tune_seconds = time.monotonic() - tune_started
        if interrupted(results, trials):
            raise KeyboardInterrupt  # Tune caught Ctrl-C and saved its state; --resume continues
        lost = tracker.close_lost_trials()
        if lost:
            log(f"{lost} trial run(s) of a killed driver were never restored by Tune: marked lost in MLflow")
        summary["failed"] = failed_trials(tracker, search_id)
        if len(results) and results.num_errors == len(results):
            name, reason = summary["failed"][0] if summary["failed"] else ("-", "")
            raise RunFailed(f"search {search_id}: all {len(results)} trial(s) failed; {name}: {one_line(reason)} "
                            f"(each trial's error: MLflow tag raydistill.error, or {workdir.ray_results / search_id})")
        evaluate_stopped_trials(tracker, results, setup)
        if opts.confirm:
            summary["confirmed"] = confirm_top(tracker, search_id, setup, opts.confirm)
        best = best_trial(tracker, search_id)
        if best is not None and best.get("config"):
            summary["best"] = best
            summary["random_init"] = baselines.log("random_init", student=best["config"])
            tracker.link_references(baselines.run_ids)
    except RunFailed:
        tracker.end_search({}, status="FAILED")
        raise
    except BaseException:
        tracker.end_search({}, status="KILLED")  # --resume continues it
        raise
    summary.update(trials=len(results), prep_seconds=round(prep_seconds, 1), tune_seconds=round(tune_seconds, 1),
                   wall_seconds=round(time.monotonic() - started, 1))
    tracker.end_search({"best_overall_score": (best or {}).get("overall_score", float("nan")),
                        "wall_seconds": summary["wall_seconds"], "prep_seconds": prep_seconds,
                        "tune_seconds": tune_seconds})
    summary["report_seconds"] = write_report(tracker, search_id)
    print_summary(summary, ctx.uri)
    return summary


def write_report(tracker, search_id: str) -> Optional[float]:
    """The search report on the search's MLflow run (``raydistill/report``): seconds it took, or
    None if it failed. The search's results are in MLflow either way, and ``raydistill report
    --log`` rebuilds it, so a failure here is reported, not raised."""
    started = time.monotonic()
    log(f"writing the search report of {search_id} to its MLflow run")
    try:
        write_search_report(tracker.client, tracker.experiment, search_id, log_to_run=True)
    except Exception as e:  # noqa: BLE001 - see the docstring
        log(f"the search report failed ({one_line(e, 200, first_line=True, with_type=True)}); "
            f"rebuild it with: raydistill report --search {search_id} --log")
        return None
    seconds = time.monotonic() - started
    log(f"search report written in {seconds:.1f}s")
    return round(seconds, 1)


def _search_id(workdir: Workdir, opts: SearchOptions) -> str:
    """The search's id, checked against what the workdir holds before any long work starts."""
    results = workdir.ray_results
    if opts.resume:
        if opts.name:
            name = opts.name
        else:  # the most recent search in this workdir
            candidates = sorted(results.glob("*/tuner.pkl"), key=lambda p: p.stat().st_mtime)
            if not candidates:
                raise UserError(f"--resume: no search to resume in {results}")
            name = candidates[-1].parent.name
        if not (results / name / "tuner.pkl").is_file():
            raise UserError(f"--resume: no search named {name!r} in {results}")
        return name
    name = opts.name or f"{Path(opts.space).stem}-{dt.datetime.now():%Y%m%d-%H%M%S}"
    if (results / name).exists():
        raise UserError(f"a search named {name!r} already exists in {results}: "
                        "use --resume to continue it or --name to start another")
    return name


def _resumed(tracker, objectives: dict, trials: int, *, explicit: bool) -> tuple[dict, int]:
    """A resumed search keeps the objectives and trial count logged on its parent run (Tune and
    its searcher are restored with them); asking for other objectives is an error."""
    run = find_run(tracker.client, tracker.experiment, {KIND: "search", SEARCH_ID: tracker.search_id})
    if run is None:
        return objectives, trials
    logged = parse_objectives(run.data.params.get("objectives"), f"search {tracker.search_id}: objectives")
    if explicit and logged != objectives:
        raise UserError(f"--resume: search {tracker.search_id} optimises {format_objectives(logged)}; "
                        "a resumed search keeps its objectives (drop --objectives)")
    return logged, int(run.data.params.get("trials", trials))


def student_name(config) -> str:
    """A short, readable name of a trial's student and targets (MLflow run names)."""
    s = config.student
    if getattr(s, "arch", "hubert") == "lstm":
        return f"lstm{s.num_layers}x{s.hidden}"
    name = f"d{s.embed_dim}-f{s.ffn_dim}-L{s.num_layers}"
    if config.method == "dicehubert":
        t = config.targets
        name += f"-{t.labels}-l{t.teacher_layer}k{t.num_clusters}"
    return name


def _tune(ctx: RunContext, space: SearchSpace, setup: TrialSetup, search_id: str, objectives: dict,
          warm_trials: list = ()):
    from ray.tune.schedulers import ASHAScheduler  # lazy: ray.tune takes seconds to import (validate needs none of it)

    from raydistill.search.searcher import ProbeAwareOptunaSearch  # lazy: imports ray.tune
    from raydistill.tracking.tune_callback import MlflowTrialCallback  # lazy: imports ray.tune

    opts = ctx.opts

    def describe(values: dict) -> tuple[str, dict, dict]:
        config = trial_config(setup, values)
        name = f"{config.method}-{student_name(config)}-{stable_hash(values, 6)}"
        return name, student_size(config, setup.teacher), config.to_dict()

    # The searcher's metric (overall_score) arrives only with a trial's last result, by design:
    # a trial ASHA stops never reports it and Optuna records it as pruned. Tune's strict check
    # would reject the intermediate results that carry only probe_score.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    callback = MlflowTrialCallback(ctx.tracker, describe)
    if opts.resume:
        log(f"resuming search {search_id}")
        # The MLflow callback comes back with the tuner; it re-attaches to the runs by tags.
        tuner = make_tuner(ctx, trial_driver, name=search_id, callback=callback, concurrent=0, restore=True,
                           setup=setup)
    else:
        max_t = max(space.base_config(method).num_evals for method in space.methods())
        # Several objectives: metric and mode lists make OptunaSearch create a multi-objective
        # study, sampled by the same TPESampler (Optuna's MOTPE: complete trials split by
        # non-domination rank, ties by hypervolume). Chosen over NSGA-II, whose populations of
        # 50 would leave a search of 8-30 trials random throughout; TPE learns from its first
        # few trials, handles the define-by-run conditional space and keeps the constant liar
        # for concurrent trials. The Pareto set is exported from MLflow (`export --pareto`).
        names, modes = list(objectives), list(objectives.values())
        multi = len(names) > 1
        searcher = ProbeAwareOptunaSearch(
            space=space.sample_for_ray, metric=names if multi else names[0], mode=modes if multi else modes[0],
            intermediate_metric="probe_score",
            to_config=space.trial_values,  # trials see config paths, not a composed space's Optuna names
            sampler=make_sampler(opts),
            storage=optuna.storages.RDBStorage(ctx.workdir.optuna_uri), study_name=search_id,
            # a space whose method is a parameter (all.yaml) runs every method once first
            points_to_evaluate=space.initial_points(opts.trials) or None,
            warm_trials=warm_trials,
        )
        # ASHA compares only probe_score and works the same whatever the searcher's objectives,
        # so it stays on for multi-objective searches too (Optuna gets no intermediate values
        # there; trials ASHA stopped are told to it as pruned, search/searcher.py). It favours
        # students that score well early, small ones included only if they do; every stopped
        # trial is still scored in full from its last checkpoint afterwards, so it is a
        # candidate of the Pareto export with that (truncated-training) score.
        scheduler = None if opts.scheduler == "fifo" else ASHAScheduler(
            metric="probe_score", mode="max", time_attr="training_iteration", max_t=max_t,
            grace_period=min(opts.grace_period, max_t), reduction_factor=opts.reduction_factor)
        tuner = make_tuner(ctx, trial_driver, name=search_id, callback=callback,
                           concurrent=ctx.concurrent(setup, opts.trials), num_samples=opts.trials,
                           search_alg=searcher, scheduler=scheduler, setup=setup)
    try:
        return tuner.fit()
    finally:
        remove_stale_staging()  # what the workers of ASHA-stopped trials staged on this node


def make_sampler(opts: SearchOptions):
    """Optuna's sampler: TPE (default) or random (``--sampler random``, the baseline a search is
    measured against: bench/search_vs_random.py)."""
    if opts.sampler == "random":
        return optuna.samplers.RandomSampler(seed=opts.seed)
    # TPE's default 10 random start-up trials would make a short search all random.
    return optuna.samplers.TPESampler(seed=opts.seed, n_startup_trials=max(2, min(10, opts.trials // 3)))


def interrupted(results, trials: int) -> bool:
    """Whether ``tuner.fit()`` returned because of Ctrl-C: Tune catches the first SIGINT, saves
    its state and returns as if done. Then a trial is left unfinished (neither terminated nor
    errored) or fewer than ``trials`` were created; a search that ran out returns neither."""
    unfinished = len(results) - results.num_terminated - results.num_errors
    return unfinished > 0 or len(results) < trials


def best_trial(tracker, search_id: str) -> Optional[dict]:
    """The best trial run of this search (from MLflow): the highest confirmed overall_score if
    any trial was confirmed (``--confirm``), else the highest overall_score."""
    runs = ranked([r for r in trial_runs(tracker.client, tracker.experiment, search_id) if scored(r)])
    if not runs:
        return None
    r = runs[0]
    return {"run_id": r.info.run_id, "run_name": r.info.run_name, **r.data.metrics,
            "params": int(r.data.metrics["params"]) if "params" in r.data.metrics else "?",
            "config": run_config(r)}


def failed_trials(tracker, search_id: str) -> list[tuple[str, str]]:
    """(run name, reason) of this search's trials that failed (``error`` or ``diverged``), from MLflow."""
    return [(r.info.run_name, r.data.tags.get("raydistill.error", ""))
            for r in trial_runs(tracker.client, tracker.experiment, search_id, order_by=["attributes.start_time ASC"])
            if r.data.tags.get("raydistill.status") in ("error", "diverged")]


def ui_url(experiment_id: str, host: str = "http://127.0.0.1:5000") -> str:
    """The MLflow UI's runs table of an experiment (its bare experiment URL opens an overview page)."""
    return f"{host}/#/experiments/{experiment_id}/runs"


def print_summary(summary: dict, uri: str) -> None:
    names = {"pr_per": "PER", "asr_wer": "WER", "ks_acc": "KS", "qbe_map": "QbE", "sid_acc": "SID",
             "asv_eer": "EER", "ic_acc": "IC"}

    def fmt(d: Optional[dict]) -> str:
        if not d:
            return "n/a"
        tasks = "  ".join(f"{name} {d[key]:.1f}" for key, name in names.items() if key in d)
        return (f"overall {d.get('overall_score', float('nan')):.2f}  superb {d.get('superb_score', float('nan')):.0f}"
                f"  |  {tasks}")

    best = summary.get("best")
    failed = summary.get("failed") or []
    confirmed = [c for c in summary.get("confirmed") or [] if c.get("confirmed") is not None]
    lines = [
        "",
        f"search {summary['search_id']}: {summary['trials']} trials in {summary['wall_seconds']:.0f}s "
        f"(preparation {summary['prep_seconds']:.0f}s, trials {summary['tune_seconds']:.0f}s)",
        f"  best trial   {best['run_name'] if best else '-'}: {fmt(best)}  params {best.get('params', '?') if best else '-'}"
        + (f"  masked {100 * best['mask_frac']:.0f} % of frames" if best and "mask_frac" in best else ""),
        *([f"  confirmed    the top {len(confirmed)} over {int(best.get('confirmed_seeds', 3))} evaluation seeds, "
           "heads' learning rates tuned on dev (ranked by this): "
           + ";  ".join(f"{c['run_name']} {c['confirmed']:.2f} ± {c['spread']:.2f} (single {c['overall_score']:.2f})"
                        for c in sorted(confirmed, key=lambda c: -c["confirmed"]))] if confirmed and best else []),
        *([f"  failed       {len(failed)} trial(s); {failed[0][0]}: {one_line(failed[0][1], 200)}"] if failed else []),
        f"  teacher      {fmt(summary.get('teacher'))}",
        f"  random init  {fmt(summary.get('random_init'))}",
        f"  fbank        {fmt(summary.get('fbank'))}",
        "",
        f"leaderboard and report:  raydistill report --mlflow-uri {uri} --experiment {summary['experiment']} "
        f"--search {summary['search_id']}"
        + (f"  (report written in {summary['report_seconds']:.0f}s)" if summary.get("report_seconds") is not None else ""),
        f"compare trials in MLflow:  mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000",
        f"  then open {ui_url(summary.get('experiment_id', '0'))}  (the search run expands to its trials; "
        "its artifacts hold report/report.html)",
        f"export the best configuration:  raydistill export --mlflow-uri {uri} --experiment {summary['experiment']} --out exported",
    ]
    objectives = summary.get("objectives") or {}
    if len(objectives) > 1:
        lines.append(f"export the Pareto set ({format_objectives(objectives)}):  raydistill export --mlflow-uri {uri} "
                     f"--experiment {summary['experiment']} --search {summary['search_id']} --pareto --out exported")
    print("\n".join(lines), flush=True)


"""``raydistill study --plan FILE``: the papers' claims measured, several training seeds per arm.

A study plan (``studies/papers.yaml``) names *arms* (one fixed configuration each: a search
space's base, the plan's shared training budget, and the arm's own settings) and
*comparisons* between arms (the paper's claim and which metric decides it). Every arm is
trained at every seed of the plan with the same steps, batch and final evaluation, each cell
(arm × seed) one Ray Train run driven by Ray Tune (a grid, no searcher, no early stopping), each
an MLflow trial run of the study's parent run. The table (``report/study_table.py``) gives every arm's
mean ± spread and every comparison's verdict.

Resumable: a cell is identified by its arm, seed and configuration hash (``raydistill.trial_id``).
Rerunning the same command trains only the cells without a finished run; an interrupted cell
resumes from its last Ray Train checkpoint (its Train run name is the cell's). Editing an arm
changes its hash: its old cells are ignored, its new ones trained.

Plan format::

    name: papers
    description: free text
    seeds: [0, 1, 2]                  # training seeds (TrainConfig.seed) of every arm
    evaluation: full                  # the final suite of every cell (full | probe)
    tasks: [pr, sid, asr, asv]        # optional: only these tasks (a corpus without keywords or intents)
    budget: {optim: {max_steps: 300}, eval_every: 300}   # merged over every arm: equal budget
    smoke: {seeds: [0, 1], budget: {...}}                # with --smoke
    arms:
      NAME: {space: ../search_spaces/dice.yaml, set: {dotted.path: value}, about: text}
      NAME: {config: ../exported/dice/best.yaml, about: text}   # a search's exported winner
    comparisons:
      - {id: ID, title: text, claim: text, kind: better|no_worse|tradeoff|pareto,
         arms: [A, B, ...], metric: overall_score, task: pr_per, note: text}
    subsets: {NAME: [comparison id, ...]}                # --only NAME runs their arms only
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from raydistill import provenance
from raydistill.commands.run import NAME, Inputs, RunContext, TunedOptions, make_tuner, open_run
from raydistill.commands.train import read_config_file
from raydistill.config import PRETRAIN, TrainConfig
from raydistill.errors import UserError
from raydistill.evaluate.suite import OVERALL_SCORE_METRICS, TASKS
from raydistill.methods import describe, teacher_needs
from raydistill.teacher.info import TeacherInfo
from raydistill.prepare import masks_teacher_input
from raydistill.report.study_table import StudyTable
from raydistill.search.setup import TrialSetup
from raydistill.search.space import load_space, merge, set_path
from raydistill.search.trial import make_trainer, student_size
from raydistill.targets.store import TargetStore, TeacherNeeds, store_root
from raydistill.teacher.mfcc import MfccSource
from raydistill.tracking.mlflow import (KIND, REFERENCE, SEARCH_ID, STATUS, TRIAL_ID, find_run, open_experiment,
                                        trial_runs)
from raydistill.train.pretrain import EMBEDDED_TEACHER, SMOKE_TEACHER
from raydistill.utils import log, read_yaml_mapping, stable_hash

PLAN_KEYS = {"name", "description", "seeds", "evaluation", "tasks", "budget", "smoke", "arms", "comparisons", "subsets"}
ARM_KEYS = {"space", "config", "set", "about"}
COMPARISON_KEYS = {"id", "title", "claim", "kind", "arms", "metric", "task", "note", "min_saved"}
KINDS = ("better", "no_worse", "tradeoff", "pareto")
STUDY = "raydistill.study"  # tag on the study's parent run: the plan's name


@dataclass(frozen=True)
class Arm:
    name: str
    config: dict  # the full TrainConfig dict, seed left at the base's (each cell sets its own)
    about: str = ""
    space: str = ""

    def key(self) -> str:
        """Changes when the arm's configuration does (its old cells are then ignored)."""
        return stable_hash(self.config, 6)

    def cell(self, seed: int) -> str:
        return f"{self.name}-s{seed}-{self.key()}"

    def train_config(self, seed: int) -> TrainConfig:
        return TrainConfig.from_dict({**self.config, "seed": seed}, where=f"arm {self.name}")


@dataclass(frozen=True)
class Comparison:
    id: str
    title: str
    claim: str
    kind: str
    arms: tuple[str, ...]
    metric: str = "overall_score"  # what the verdict is decided on
    task: str = "overall_score"  # the task the paper emphasises (shown beside overall_score)
    note: str = ""
    min_saved: float = 0.2  # tradeoff: the MACs a variant must save to count as a saving


@dataclass(frozen=True)
class Plan:
    path: Path
    name: str
    description: str
    seeds: tuple[int, ...]
    evaluation: str
    arms: dict[str, Arm]
    comparisons: tuple[Comparison, ...]
    subsets: dict[str, tuple[str, ...]] = field(default_factory=dict)
    tasks: tuple[str, ...] = ()  # () = the suite's tasks
    resources: dict = field(default_factory=dict)  # per worker: the most any of its arms' spaces asks for

    def selected(self, only: Optional[str]) -> tuple[Comparison, ...]:
        """The comparisons ``--only`` names: a subset's name or comparison ids, comma-separated."""
        if not only:
            return self.comparisons
        ids: list[str] = []
        for part in (p.strip() for p in only.split(",") if p.strip()):
            if part in self.subsets:
                ids.extend(self.subsets[part])
            elif any(c.id == part for c in self.comparisons):
                ids.append(part)
            else:
                raise UserError(f"--only {part!r}: not a subset ({', '.join(self.subsets) or 'none'}) or comparison "
                                f"id ({', '.join(c.id for c in self.comparisons)}) of {self.path}")
        return tuple(c for c in self.comparisons if c.id in ids)

    def arms_of(self, comparisons) -> list[Arm]:
        names = {a for c in comparisons for a in c.arms}
        return [arm for name, arm in self.arms.items() if name in names]

    def cells(self, arms) -> list[tuple[Arm, int]]:
        """Seed-major: every arm once before any arm twice, so a partial study covers every arm."""
        return [(arm, seed) for seed in self.seeds for arm in arms]


def load_plan(path: Path, *, smoke: bool = False) -> Plan:
    """Read and fully validate a plan: every arm's configuration is built, every comparison's
    arms and metrics checked (a UserError names the file and the entry)."""
    path = Path(path)
    raw = read_yaml_mapping(path, "study plan", PLAN_KEYS,
                            shape="a mapping (name, seeds, budget, arms, comparisons)")
    smoke_doc = raw.get("smoke") or {}
    if not isinstance(smoke_doc, dict) or set(smoke_doc) - {"seeds", "budget", "evaluation"}:
        raise UserError(f"{path}: smoke may set seeds, budget and evaluation only")
    if smoke:
        raw = {**raw, **smoke_doc, "budget": merge(raw.get("budget") or {}, smoke_doc.get("budget") or {})}
    name = raw.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise UserError(f"{path}: name must be letters, digits, '.', '_' and '-', found {name!r}")
    seeds = raw.get("seeds", [0, 1, 2])
    if (not isinstance(seeds, list) or not seeds or len(set(map(str, seeds))) != len(seeds)
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)):
        raise UserError(f"{path}: seeds must be a list of distinct integers >= 0, found {seeds!r}")
    evaluation = raw.get("evaluation", "full")
    if evaluation not in ("full", "probe"):
        raise UserError(f"{path}: evaluation must be full or probe, found {evaluation!r}")
    tasks = raw.get("tasks") or []
    if not isinstance(tasks, list) or not all(t in TASKS for t in tasks):
        raise UserError(f"{path}: tasks must be a list of {', '.join(TASKS)}, found {tasks!r}")
    budget = raw.get("budget") or {}
    if not isinstance(budget, dict):
        raise UserError(f"{path}: budget must be a mapping of TrainConfig fields (e.g. optim: {{max_steps: 300}})")

    arms: dict[str, Arm] = {}
    spaces: dict[Path, Any] = {}
    if not isinstance(raw.get("arms"), dict) or not raw["arms"]:
        raise UserError(f"{path}: arms must be a non-empty mapping of arm name -> {{space, set, about}}")
    for arm_name, doc in raw["arms"].items():
        where = f"{path}: arm {arm_name}"
        if not isinstance(arm_name, str) or not NAME.fullmatch(arm_name):
            raise UserError(f"{path}: arm names are letters, digits, '.', '_' and '-', found {arm_name!r}")
        if not isinstance(doc, dict) or ("space" in doc) == ("config" in doc) or set(doc) - ARM_KEYS:
            raise UserError(f"{where}: expected {{space: FILE, set: {{...}}, about: text}} "
                            f"or {{config: EXPORTED_FILE, set: {{...}}, about: text}}")
        source = str(doc.get("space", doc.get("config")))
        source_path = (path.parent / source).resolve()
        if not source_path.is_file():
            what = "space" if "space" in doc else "config"
            raise UserError(f"{where}: {what} file {source} not found (paths are relative to the plan)")
        settings = doc.get("set") or {}
        if not isinstance(settings, dict):
            raise UserError(f"{where}: set must be a mapping of dotted config paths to values")
        if "config" in doc:  # a searched winner (raydistill export): its configuration, the plan's budget
            config = merge(read_config_file(source_path)["train"], budget)
        else:
            if source_path not in spaces:
                spaces[source_path] = load_space(source_path, smoke=smoke)
            space = spaces[source_path]
            method = settings.get("method", space.method)
            config = merge(space.base_for(method) if method in space.methods() else space.base, budget)
        for key, value in settings.items():
            set_path(config, str(key), value)
        try:
            built = TrainConfig.from_dict(config, where=where)
        except UserError:
            raise
        except (ValueError, TypeError) as e:
            raise UserError(f"{where}: {e}") from None
        if built.num_evals < 1:
            raise UserError(f"{where}: eval_every must not exceed the steps")
        arms[arm_name] = Arm(arm_name, built.to_dict(), str(doc.get("about", "")), source)

    metrics = {"overall_score", "superb_score", *OVERALL_SCORE_METRICS}
    comparisons = []
    for i, doc in enumerate(raw.get("comparisons") or []):
        where = f"{path}: comparison {i + 1}"
        if not isinstance(doc, dict) or set(doc) - COMPARISON_KEYS or "arms" not in doc:
            raise UserError(f"{where}: expected a mapping with arms (allowed keys: {', '.join(sorted(COMPARISON_KEYS))})")
        c = Comparison(id=str(doc.get("id", i + 1)), title=str(doc.get("title", "")), claim=str(doc.get("claim", "")),
                       kind=doc.get("kind", "better"), arms=tuple(doc["arms"]),
                       metric=doc.get("metric", "overall_score"), task=doc.get("task", "overall_score"),
                       note=str(doc.get("note", "")), min_saved=float(doc.get("min_saved", 0.2)))
        if c.kind not in KINDS:
            raise UserError(f"{where}: kind must be one of {', '.join(KINDS)}, found {c.kind!r}")
        missing = [a for a in c.arms if a not in arms]
        if missing:
            raise UserError(f"{where}: unknown arm(s) {', '.join(map(str, missing))}")
        if (c.kind != "pareto" and len(c.arms) != 2) or (c.kind == "pareto" and len(c.arms) < 2):
            raise UserError(f"{where}: {c.kind} compares {'two' if c.kind != 'pareto' else 'two or more'} arms")
        for what in (c.metric, c.task):
            if what not in metrics:
                raise UserError(f"{where}: unknown metric {what!r} (one of {', '.join(sorted(metrics))})")
        comparisons.append(c)
    if not comparisons:
        raise UserError(f"{path}: comparisons must list at least one comparison")
    ids = [c.id for c in comparisons]
    if len(set(ids)) != len(ids):
        raise UserError(f"{path}: comparison ids must be distinct, found {ids}")
    subsets = raw.get("subsets") or {}
    if not isinstance(subsets, dict):
        raise UserError(f"{path}: subsets must map a name to comparison ids")
    for subset, members in subsets.items():
        bad = [m for m in (members or []) if str(m) not in ids]
        if not members or bad:
            raise UserError(f"{path}: subset {subset}: unknown comparison id(s) {bad or '(none given)'}")
    resources: dict = {}
    for space in spaces.values():
        for key, value in space.resources.items():
            resources[key] = max(resources.get(key, value), value)
    return Plan(path, name, str(raw.get("description", "")), tuple(seeds), evaluation, arms, tuple(comparisons),
                {str(k): tuple(map(str, v)) for k, v in subsets.items()}, tuple(tasks), resources)



def arm_needs(arms, info: TeacherInfo):
    """What the study's teacher pass must cache: the union over the arms that read the teacher
    (``hubert-pretrain`` arms read MFCC units instead: ``mfcc_units``)."""
    needs = TeacherNeeds()
    for arm in arms:
        config = arm.train_config(0)
        if config.method != PRETRAIN:
            needs = needs | teacher_needs(config, info)
    return needs


def mfcc_units(arms) -> list[tuple[int, int]]:
    """The (layer 0, K) MFCC units the ``hubert-pretrain`` arms (self-supervised from scratch) read."""
    return sorted({(0, arm.train_config(0).targets.num_clusters) for arm in arms
                   if arm.config["method"] == PRETRAIN})


@dataclass(kw_only=True)
class StudyOptions(TunedOptions):
    """``raydistill study``'s options (the shared ones: :class:`~raydistill.commands.run.RunOptions`;
    resources left open default to the most any arm's space asks for)."""

    plan: Path
    only: Optional[str] = None
    experiment: str = "raydistill-study"
    out: Optional[Path] = None

    def validate(self) -> tuple[Plan, tuple[Comparison, ...], list[Arm], Inputs]:
        plan = load_plan(self.plan, smoke=self.smoke)
        self.check_run(plan.resources)  # flags, else the arms' spaces'
        comparisons = plan.selected(self.only)
        arms = plan.arms_of(comparisons)
        inputs = self.check_inputs(self.corpus, self.teacher, smoke=self.smoke, needs=lambda info: arm_needs(arms, info),
                                   masked=any(masks_teacher_input(a.train_config(0)) for a in arms),
                                   what=f"study plan {self.plan} (armhubert with arm.masking)")
        self.check_services()
        return plan, comparisons, arms, inputs

    @property
    def study_id(self) -> str:
        return self.name or (load_plan(self.plan, smoke=self.smoke).name + ("-smoke" if self.smoke else ""))


def done_cells(client, experiment: str, study_id: str) -> dict[str, Any]:
    """{cell: run} of the study's cells that finished (completed or diverged: not trained again)."""
    return {r.data.tags[TRIAL_ID]: r for r in trial_runs(client, experiment, study_id)
            if r.data.tags.get(STATUS) in ("completed", "diverged")}


def run_study(opts: StudyOptions) -> dict:
    """Train every missing cell of the selected comparisons, then write the table."""
    started = time.monotonic()
    plan, comparisons, arms, inputs = opts.validate()  # nothing written before
    study_id = opts.name or plan.name + ("-smoke" if opts.smoke else "")
    ctx = open_run(opts, inputs, tracker_id=study_id)
    tracker, corpus, teacher = ctx.tracker, ctx.corpus, ctx.teacher
    done = done_cells(tracker.client, tracker.experiment, study_id)
    todo = [(arm, seed) for arm, seed in plan.cells(arms) if arm.cell(seed) not in done]
    log(f"study {study_id}: {len(arms)} arms x {len(plan.seeds)} seeds for {len(comparisons)} comparison(s); "
        f"{len(done)} cell(s) done, {len(todo)} to train")
    store = ctx.targets(arm_needs(arms, ctx.info))
    budgets = ctx.budgets(plan.evaluation, plan.tasks)  # a corpus without keyword or intent labels (LibriSpeech)
    tracker.start_search(study_id, {
        "plan": str(opts.plan), "study": plan.name, "only": opts.only or "all", "seeds": ",".join(map(str, plan.seeds)),
        "arms": len(arms), "smoke": opts.smoke, "teacher": teacher.spec, "teacher_key": teacher.key,
        "corpus_key": corpus.key, "budget": budgets["full"], "seed": opts.seed,
        "method": ",".join(sorted({a.config["method"] for a in arms})),
    }, space_file=opts.plan, provenance=provenance.record(corpus_key=corpus.key, teacher_key=teacher.key,
                                                          search_id=study_id),
        artifacts={"arms.yaml": {a.name: a.config for a in arms}})
    tracker.client.set_tag(tracker.parent, STUDY, plan.name)
    try:
        baselines = ctx.baselines(budgets)
        references = {name: baselines.log(name) for name in ("teacher", "fbank")}
        tracker.link_references(baselines.run_ids)
        units = mfcc_units(arms)
        setup = ctx.setup(study_id, store, budgets, references=baselines.references(),
                          pretrain_targets_dir=str(mfcc_store(corpus, ctx.workdir, units).root) if units else None)
        if todo:
            results = _tune(ctx, setup, study_id, todo)
            if results.num_terminated + results.num_errors < len(todo):
                raise KeyboardInterrupt  # Tune caught Ctrl-C: rerunning the command continues
            tracker.close_lost_trials()
    except BaseException:
        tracker.end_search({}, status="KILLED")
        raise
    table = StudyTable.from_runs(done_cells(tracker.client, tracker.experiment, study_id), plan, comparisons,
                                 references)
    tracker.end_search({"wall_seconds": time.monotonic() - started, "cells": len(plan.cells(arms))})
    table.log(tracker.client, tracker.parent)
    if opts.out is not None:
        table.write(opts.out)
    print(table.markdown(), flush=True)
    return {"study_id": study_id, "experiment": opts.experiment, "mlflow_uri": ctx.uri, "trained": len(todo),
            "wall_seconds": round(time.monotonic() - started, 1), "verdicts": table.verdicts()}


def mfcc_store(corpus, workdir, units):
    """The MFCC units (HuBERT iteration 1's targets) the self-supervised arms learn from: the
    store the embedded teacher was pretrained from, made here for any other teacher."""
    source = MfccSource(cmvn=True)
    store = TargetStore(store_root(workdir.cache, source.key, corpus.key))
    store.ensure(source, corpus, corpus.split("train"), units, layers=[0])
    return store


def study_driver(values: dict, setup: TrialSetup, cells: dict) -> None:
    """The Tune trainable of one cell: its arm's configuration at its seed, on Ray Train
    (``cells``: {cell: {arm, seed, config}} of the cells this run trains)."""
    from ray.tune.integration.ray_train import TuneReportCallback  # lazy: ray.tune takes seconds to import

    cell = cells[values["cell"]]
    config = TrainConfig.from_dict(cell["config"], where=f"cell {values['cell']}")
    # the cell's name is its Train run's: an interrupted cell resumes from its checkpoint
    make_trainer(setup, config, f"{setup.search_id}-{values['cell']}", [TuneReportCallback()]).fit()


def _tune(ctx: RunContext, setup: TrialSetup, study_id: str, todo):
    from ray import tune  # lazy: ray.tune takes seconds to import; --dry-run and --table need none of it

    from raydistill.tracking.tune_callback import MlflowTrialCallback  # lazy: imports ray.tune

    cells = {arm.cell(seed): {"arm": arm.name, "seed": seed, "config": arm.train_config(seed).to_dict()}
             for arm, seed in todo}

    def describe_cell(values: dict) -> tuple[str, dict, dict]:
        cell = cells[values["cell"]]
        config = TrainConfig.from_dict(cell["config"], where="cell")
        return f"{cell['arm']}-s{cell['seed']}", student_size(config, setup.teacher), cell["config"]

    callback = MlflowTrialCallback(ctx.tracker, describe_cell, key=lambda trial: trial.config["cell"],
                                   params=lambda values: {k: cells[values["cell"]][k] for k in ("arm", "seed")})
    attempt = sum(1 for _ in (ctx.workdir.ray_results).glob(f"{study_id}-run*")) + 1
    concurrent = ctx.concurrent(setup)
    log(f"training {len(cells)} cell(s), {min(concurrent, len(cells))} at a time")
    tuner = make_tuner(ctx, study_driver, name=f"{study_id}-run{attempt}", callback=callback, concurrent=concurrent,
                       param_space={"cell": tune.grid_search(list(cells))}, setup=setup, cells=cells)
    return tuner.fit()


def describe_study(opts: StudyOptions) -> dict:
    """``--dry-run``: the arms with their students' sizes and the cells still to train (reads the
    plan, the teacher's shape and the MLflow store if there is one; writes nothing)."""
    plan, comparisons, arms, inputs = opts.validate()
    teacher = inputs.teacher
    if teacher is not None:
        info = teacher.info
    else:
        shape = SMOKE_TEACHER if opts.smoke else EMBEDDED_TEACHER
        info = TeacherInfo(shape.student.num_layers, shape.student.embed_dim, shape.targets.num_clusters)
    study_id = opts.name or plan.name + ("-smoke" if opts.smoke else "")
    done = _existing_done(opts, study_id)
    rows = []
    for arm in arms:
        size = describe(arm.train_config(0), info)
        rows.append({"arm": arm.name, "method": arm.config["method"], "params": size["params"],
                     "macs_per_second": size["macs_per_second"], "steps": arm.config["optim"]["max_steps"],
                     "cells_done": sum(arm.cell(s) in done for s in plan.seeds), "about": arm.about})
    cells = len(plan.cells(arms))
    return {"study_id": study_id, "comparisons": [c.id for c in comparisons], "seeds": list(plan.seeds),
            "cells": cells, "cells_to_train": cells - sum(r["cells_done"] for r in rows), "arms": rows}


def _existing_done(opts: StudyOptions, study_id: str) -> dict:
    """The finished cells in an existing store (none if the store or experiment does not exist)."""
    try:
        client, experiment = open_experiment(opts.mlflow_store, opts.experiment)
    except UserError:
        return {}
    return done_cells(client, experiment, study_id)


def study_table(opts: StudyOptions):
    """``--table``: the table of the finished cells so far (read only)."""
    plan = load_plan(opts.plan, smoke=opts.smoke)
    comparisons = plan.selected(opts.only)
    study_id = opts.name or plan.name + ("-smoke" if opts.smoke else "")
    client, experiment = open_experiment(opts.mlflow_store, opts.experiment)
    run = find_run(client, experiment, {KIND: "search", SEARCH_ID: study_id})
    if run is None:
        raise UserError(f"no study {study_id!r} in experiment {opts.experiment!r} (run it first, or pass --name)")
    references = {}
    for name in ("teacher", "fbank"):
        rid = run.data.tags.get(REFERENCE + name)
        if rid:
            references[name] = client.get_run(rid).data.metrics
    table = StudyTable.from_runs(done_cells(client, experiment, study_id), plan, comparisons, references)
    if opts.out is not None:
        table.write(opts.out)
    return table

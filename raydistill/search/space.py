"""Search-space files: a fixed base configuration plus the parameters Optuna samples.

Format (YAML)::

    method: dicehubert
    description: free text
    base:                     # TrainConfig fields every trial shares
      student: {preset: tiny-teacher, embed_dim: 128}
      optim: {max_steps: 800}
    smoke:                    # merged over `base` with --smoke (a real but tiny run)
      optim: {max_steps: 24}
    params:                   # dotted TrainConfig paths, sampled in this order
      optim.lr:        {type: float, low: 1.0e-4, high: 3.0e-3, log: true}
      student.num_layers: {type: int, low: 2, high: 6}
      targets.labels:  {type: categorical, choices: [hard, soft]}
      targets.temperature: {type: float, low: 0.5, high: 10, log: true, when: {targets.labels: soft}}
    objectives: {overall_score: max, params: min}   # optional (default: overall_score: max)

``when`` makes a parameter conditional: it is sampled only if every named (earlier)
parameter took one of the listed values; otherwise the base value applies.

``objectives`` (optional) makes the search multi-objective: ``overall_score`` with the
student's ``params`` and/or ``macs_per_second`` (``search/objectives.py``; ``raydistill search
--objectives`` overrides it).

Several methods in one search: ``compose: [dice.yaml, kd.yaml]`` (paths relative to the
composing file, which may add only ``description`` and ``objectives``: the files' own
objectives do not apply) searches every listed
single-method file as it stands: a ``method`` parameter chooses the file, a trial runs with that
file's own base (and smoke section), and each file's parameters keep their ranges and
conditions, made conditional on their method (``search_spaces/all.yaml``). Two methods may
search one configuration path over different ranges, so a composed parameter's Optuna name is
``<method>:<path>`` (e.g. ``kd:optim.lr``; not ``/``, at which Ray Tune nests a trial's config);
trials, MLflow and export see the plain path (:meth:`SearchSpace.trial_values`).

The method may also be an ordinary parameter (``method: {type: categorical, choices: [...]}``);
``methods:`` then gives each method's own base, merged over ``base`` when a trial runs that
method (e.g. the BiLSTM student of ``kd``).

The whole file is validated before anything starts (:func:`load_space`): unknown keys, empty or
inverted ranges, conditions on unknown parameters, and values the configuration would reject
(every choice and both ends of every range are tried) are :class:`UserError`\\ s that
name the file and the parameter.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from raydistill.config import METHODS, TrainConfig
from raydistill.errors import UserError
from raydistill.evaluate.suite import TASKS
from raydistill.methods import get_method, teacher_needs
from raydistill.teacher.info import TeacherInfo
from raydistill.search.objectives import DEFAULT as DEFAULT_OBJECTIVES, parse_objectives
from raydistill.targets.store import TeacherNeeds
from raydistill.utils import read_yaml_mapping

TOP_KEYS = {"method", "description", "base", "methods", "smoke", "params", "objectives", "compose", "resources", "tasks"}
# a composed space's bases and knobs are its files; resources and tasks may be set for the whole search
COMPOSE_KEYS = {"compose", "description", "objectives", "resources", "tasks"}
RESOURCE_KEYS = {"workers": int, "cpus_per_worker": float, "gpus_per_worker": float}
PARAM_KEYS = {
    "float": {"type", "low", "high", "log", "step", "when"},
    "int": {"type", "low", "high", "log", "step", "when"},
    "categorical": {"type", "choices", "when"},
}
MAX_TARGET_COMBOS = 64  # (teacher layer, K) pairs precomputed before the first trial
MAX_NEEDS_CONFIGS = 20_000  # configurations whose teacher needs are united (SearchSpace.needs_configs)


@dataclass(frozen=True)
class Param:
    name: str  # Optuna's name: the dotted TrainConfig path, e.g. "optim.lr" (composed: "kd:optim.lr")
    type: str  # float | int | categorical
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    step: Optional[float] = None
    choices: Optional[tuple] = None
    when: Optional[dict[str, tuple]] = None  # {earlier param: allowed values}
    path: str = ""  # the TrainConfig path it sets; empty: the name

    def __post_init__(self):
        if not self.path:
            object.__setattr__(self, "path", self.name)

    def values_to_check(self) -> list:
        """Every choice, or both ends of the range: what validation tries in a config."""
        return list(self.choices) if self.type == "categorical" else [self.low, self.high]

    def needs_values(self) -> list:
        """The values that can change what a trial reads from the teacher: every choice, every
        integer of an int range, both ends of a float range (:meth:`SearchSpace.needs_configs`)."""
        if self.type == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        return self.values_to_check()

    def finite_values(self) -> Optional[list]:
        """All values this parameter can take, if that set is small and discrete."""
        if self.type == "categorical":
            return list(self.choices)
        if self.type == "int" and not self.log:
            step = int(self.step or 1)
            return list(range(int(self.low), int(self.high) + 1, step))
        return None

    def distribution(self):
        """This parameter's Optuna distribution (what ``suggest`` samples from)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.type == "float":
            return FloatDistribution(self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return CategoricalDistribution(list(self.choices))

    def parse(self, text: str) -> Any:
        """The value MLflow logged as ``text`` (``str(value)``), if this parameter can take it;
        else a ValueError."""
        if self.type == "categorical":
            matches = [c for c in self.choices if str(c) == text]
            if not matches:
                raise ValueError(f"{text!r} is not one of {list(self.choices)}")
            return matches[0]
        value = float(text) if self.type == "float" else int(text)
        if not self.low <= value <= self.high:
            raise ValueError(f"{text} is outside [{self.low}, {self.high}]")
        return value

    def suggest(self, trial) -> Any:
        """Sample with an ``optuna.Trial``."""
        if self.type == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return trial.suggest_categorical(self.name, list(self.choices))


@dataclass(frozen=True)
class SearchSpace:
    path: str
    method: str
    description: str
    base: dict  # nested TrainConfig dict (smoke already merged when asked)
    params: tuple[Param, ...]
    method_bases: dict = dataclasses.field(default_factory=dict)  # method -> base overrides
    # {metric: max|min}, in order (search/objectives.py); more than one: multi-objective search
    objectives: dict = dataclasses.field(default_factory=lambda: dict(DEFAULT_OBJECTIVES))
    # per-trial resources the search asks for unless its flags say otherwise (workers, cpus_per_worker,
    # gpus_per_worker); ``smoke: {resources: ...}`` replaces them in a smoke run
    resources: dict = dataclasses.field(default_factory=dict)
    tasks: Optional[tuple[str, ...]] = None  # the final evaluation's tasks (None: all seven)

    def methods(self) -> list[str]:
        """Every method a trial may run."""
        param = next((p for p in self.params if p.name == "method"), None)
        return list(param.choices) if param is not None else [self.method]

    def initial_points(self, trials: int) -> list[dict]:
        """Partial first trials (Optuna enqueued): every method once when the method is a
        parameter and the search has room for them; the sampler fills in the other knobs."""
        methods = self.methods()
        if not any(p.name == "method" for p in self.params) or trials < len(methods):
            return []
        return [{"method": m} for m in methods]

    def base_for(self, method: str) -> dict:
        """The base configuration of a trial running ``method``."""
        return merge(merge(self.base, self.method_bases.get(method, {})), {"method": method})

    def sample(self, trial) -> dict[str, Any]:
        """Optuna define-by-run: sample the parameters whose conditions hold; the trial's
        values as flat {config path: value} (:meth:`trial_values`)."""
        values: dict[str, Any] = {}
        for p in self.params:
            if _active(p, values):
                values[p.name] = p.suggest(trial)
        return self.trial_values(values)

    def trial_values(self, values: dict[str, Any]) -> dict[str, Any]:
        """Sampled values by Optuna name -> by config path (``kd:optim.lr`` -> ``optim.lr``):
        what a trial's config, its MLflow params and the export see. A composed trial samples
        one method's parameters only, so no two of its values share a path."""
        paths = {p.name: p.path for p in self.params}
        return {paths.get(name, name): value for name, value in values.items()}

    def optuna_values(self, logged: dict[str, str]) -> Optional[dict[str, Any]]:
        """The Optuna values (by Optuna name) that give a trial the knob values ``logged`` (by
        config path, as MLflow strings), walking the parameters in order like :meth:`sample`;
        None if this space cannot give them (a value out of range, a knob it does not sample,
        one it would sample missing)."""
        chosen: dict[str, Any] = {}
        used = set()
        for p in self.params:
            if not _active(p, chosen):
                continue
            if p.path not in logged:
                return None
            try:
                chosen[p.name] = p.parse(str(logged[p.path]))
            except ValueError:
                return None
            used.add(p.path)
        return chosen if used == set(logged) else None

    def distributions(self, values: dict[str, Any]) -> dict:
        """The Optuna distributions of the parameters named in ``values``."""
        return {p.name: p.distribution() for p in self.params if p.name in values}

    def describe(self) -> dict:
        """The space as plain data (the search run's ``search_space.yaml``): its methods,
        objectives and parameters, from which the report rebuilds each Optuna distribution."""
        params = []
        for p in self.params:
            d = {k: v for k, v in dataclasses.asdict(p).items() if v is not None and v is not False}
            if p.choices is not None:
                d["choices"] = list(p.choices)
            if p.when:
                d["when"] = {k: list(v) for k, v in p.when.items()}
            params.append(d)
        return {"path": self.path, "methods": self.methods(), "objectives": dict(self.objectives), "params": params}

    def sample_for_ray(self, trial) -> None:
        """The define-by-run function for Ray's OptunaSearch (it records what was suggested)."""
        self.sample(trial)

    def config(self, values: dict[str, Any]) -> TrainConfig:
        """The full TrainConfig of a trial: its method's base with the sampled values applied."""
        return TrainConfig.from_dict(self.config_dict(values), where=f"{self.path} (trial values {values})")

    def config_dict(self, values: dict[str, Any]) -> dict:
        """The trial's nested config dict; ``values`` by Optuna name or by config path."""
        values = self.trial_values(values)
        d = self.base_for(values.get("method", self.method))
        for name, value in values.items():
            set_path(d, name, value)
        return d

    def with_base(self, values: dict) -> "SearchSpace":
        """The same space with ``values`` (a nested config dict) set in every method's base."""
        return dataclasses.replace(self, base=merge(self.base, values),
                                   method_bases={m: merge(b, values) for m, b in self.method_bases.items()})

    def base_config(self, method: Optional[str] = None) -> TrainConfig:
        """The base configuration of ``method`` (default: the file's ``method``), unsampled."""
        return TrainConfig.from_dict(self.base_for(method or self.method), where=f"{self.path}: base")

    def target_combos(self) -> list[tuple[int, int]]:
        """Every (teacher layer, K) a DiceHuBERT trial may ask for: all computed before trial 1."""
        if "dicehubert" not in self.methods():
            return []
        base = self.base_config("dicehubert").targets
        layers = self._finite("targets.teacher_layer", base.teacher_layer)
        ks = self._finite("targets.num_clusters", base.num_clusters)
        combos = sorted(itertools.product(layers, ks))
        if len(combos) > MAX_TARGET_COMBOS:
            raise UserError(f"{self.path}: {len(combos)} (teacher_layer, num_clusters) pairs; at most {MAX_TARGET_COMBOS}")
        return combos

    def teacher_needs(self, teacher: TeacherInfo, *, live: bool = False) -> TeacherNeeds:
        """What the search computes from the teacher before trial 1: the union of what the trials
        it may run read, each by its method's own ``needs``, over :meth:`needs_configs`
        (DistilHuBERT's heads read teacher layers 4, 8 and 12 of HuBERT-base: those three are
        cached, not all 13). ``live``: every trial runs the teacher for its features and logits
        (only units are cached). ``live`` in the result: some trial loads the teacher itself."""
        space = self.with_base({"teacher_features": "live"}) if live else self
        needs = TeacherNeeds()
        for config in space.needs_configs():
            needs = needs | teacher_needs(config, teacher)
        return needs

    def needs_configs(self) -> list[TrainConfig]:
        """Every configuration a trial may run, as far as what it reads from the teacher goes.
        The parameters that set a path some method's ``needs`` reads (``Method.needs_fields``,
        ``method``, ``teacher_features``), and the ones they are conditional on, take every value
        they can: each choice, each integer of an int range, both ends of a float range (a float
        matters to ``needs`` only as zero or not, e.g. ``feat_weight``); every other parameter
        keeps its base value. Conditions hold as in :meth:`sample`."""
        fields = {"method", "teacher_features"} | {f for m in self.methods() for f in get_method(m).needs_fields}
        relevant = {p.name for p in self.params if p.path in fields}
        for p in reversed(self.params):  # conditions name earlier parameters only
            if p.name in relevant:
                relevant |= set(p.when or {})
        combos: list[dict] = [{}]
        for p in self.params:
            if p.name not in relevant:
                continue
            combos = [{**values, p.name: v} for values in combos if _active(p, values) for v in p.needs_values()] + [
                values for values in combos if not _active(p, values)]
            if len(combos) > MAX_NEEDS_CONFIGS:
                raise UserError(f"{self.path}: more than {MAX_NEEDS_CONFIGS} combinations of the parameters that "
                                "decide what trials read from the teacher (narrow their ranges)")
        return [self.config(values) for values in combos]

    def _param_for(self, path: str, method: str) -> Optional[Param]:
        """The parameter that may set ``path`` in a trial of ``method`` (None: its base value)."""
        return next((p for p in self.params
                     if p.path == path and method in (p.when or {}).get("method", (method,))), None)

    def _finite(self, name: str, base_value: int) -> list[int]:
        """Every value DiceHuBERT's ``name`` may take in a trial."""
        param = self._param_for(name, "dicehubert")
        if param is None:
            return [base_value]
        values = param.finite_values()
        if values is None:
            raise UserError(
                f"{self.path}: params.{name} must be categorical or a non-log int range: "
                "teacher targets for every value are computed before the first trial"
            )
        return [int(v) for v in values]


_MISSING = object()


def set_path(d: dict, dotted: str, value: Any) -> None:
    """``set_path(d, "optim.lr", 1e-3)`` sets ``d["optim"]["lr"]``, creating levels as needed."""
    *parents, leaf = dotted.split(".")
    for key in parents:
        d = d.setdefault(key, {})
        if not isinstance(d, dict):
            raise UserError(f"cannot set {dotted}: {key} is not a mapping")
    d[leaf] = value


def merge(base: dict, override: dict) -> dict:
    """Recursive dict merge (override wins); inputs are not modified."""
    out = copy.deepcopy(base)
    for k, v in override.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _config_field(path: str) -> bool:
    """Whether a dotted path names a field of TrainConfig (e.g. ``student.embed_dim``; the
    student may be any of its architectures, e.g. ``student.hidden`` of the BiLSTM)."""
    classes: list[Any] = [TrainConfig]
    for part in path.split("."):
        hints = [typing.get_type_hints(c) for c in classes if dataclasses.is_dataclass(c)]
        found = [h[part] for h in hints if part in h]
        if not found:
            return False
        classes = [m for hint in found for m in (typing.get_args(hint) or (hint,))]
    return not all(dataclasses.is_dataclass(c) for c in classes)


def load_space(path: str | Path, *, smoke: bool = False) -> SearchSpace:
    """Read and fully validate a search-space file."""
    raw = _read(path)
    return _compose(raw, Path(path), smoke) if "compose" in raw else _load(raw, str(path), smoke)


def _read(path: str | Path) -> dict:
    return read_yaml_mapping(path, "search space", TOP_KEYS)


def _compose(raw: dict, path: Path, smoke: bool) -> SearchSpace:
    """One search over several single-method files, each read as it stands (see the module
    docstring): written once, the all-methods space cannot drift from the per-method ones."""
    where = str(path)
    others = sorted(set(raw) - COMPOSE_KEYS)
    if others:
        raise UserError(f"{where}: compose cannot be combined with {', '.join(others)} "
                        "(each method's base and parameters come from its own file)")
    files = raw["compose"]
    if not isinstance(files, list) or not files or not all(isinstance(f, str) and f for f in files):
        raise UserError(f"{where}: compose must be a non-empty list of search-space files (relative to {path.parent})")
    parts: dict[str, tuple[str, SearchSpace]] = {}
    for name in files:
        file = path.parent / name
        if not file.is_file():
            raise UserError(f"{where}: compose: {name} does not exist ({file})")
        part_raw = _read(file)
        if "compose" in part_raw:
            raise UserError(f"{where}: compose: {name} composes other files itself (compose single-method files)")
        part = _load(part_raw, str(file), smoke)
        if len(part.methods()) > 1:
            raise UserError(f"{where}: compose: {name} searches several methods itself (compose single-method files)")
        if part.method in parts:
            raise UserError(f"{where}: compose: {parts[part.method][0]} and {name} are both method "
                            f"{part.method} (one file per method)")
        parts[part.method] = (name, part)
    methods = list(parts)
    params = [Param("method", "categorical", choices=tuple(methods))]
    for method, (_, part) in parts.items():
        for p in part.params:
            when = {"method": (method,), **{f"{method}:{k}": v for k, v in (p.when or {}).items()}}
            params.append(dataclasses.replace(p, name=f"{method}:{p.name}", when=when))
    objectives = parse_objectives(raw.get("objectives"), f"{where}: objectives")
    # a trial's base is its method's own, whole: nothing is shared between the files
    resources = _resources(raw, where, smoke) if "resources" in raw else _agreed(parts, "resources", where)
    tasks = _tasks(raw, where) if "tasks" in raw else _agreed(parts, "tasks", where)
    space = SearchSpace(where, methods[0], str(raw.get("description", "")), {"method": methods[0]}, tuple(params),
                        {method: part.base_for(method) for method, (_, part) in parts.items()}, objectives,
                        resources, tasks)
    _check_values(space)  # every value once more; each file's combinations were checked with the file
    space.target_combos()
    return space


def _load(raw: dict, where: str, smoke: bool) -> SearchSpace:
    """A search space written out in one file (``method``, ``base``, ``params``, ...)."""
    method = raw.get("method", "dicehubert")
    if method not in METHODS:
        raise UserError(f"{where}: unknown method {method!r} (choose from {', '.join(METHODS)})")
    for section in ("base", "smoke", "methods"):
        if not isinstance(raw.get(section) or {}, dict):
            raise UserError(f"{where}: {section} must be a mapping")
    base = merge({"method": method}, raw.get("base") or {})
    if smoke:
        base = merge(base, {k: v for k, v in (raw.get("smoke") or {}).items() if k != "resources"})
    method_bases = raw.get("methods") or {}
    for name, overrides in method_bases.items():
        if name not in METHODS:
            raise UserError(f"{where}: methods.{name}: unknown method (choose from {', '.join(METHODS)})")
        if not isinstance(overrides, dict):
            raise UserError(f"{where}: methods.{name} must be a mapping of base overrides")
    TrainConfig.from_dict(copy.deepcopy(base), where=f"{where}: base")  # key and value check

    params_raw = raw.get("params") or {}
    if not isinstance(params_raw, dict):
        raise UserError(f"{where}: params must be a mapping of parameter name to definition")
    params: list[Param] = []
    for name, spec in params_raw.items():
        params.append(_parse_param(name, spec, params, where))
    objectives = parse_objectives(raw.get("objectives"), f"{where}: objectives")
    space = SearchSpace(where, method, str(raw.get("description", "")), base, tuple(params), method_bases,
                        objectives, _resources(raw, where, smoke), _tasks(raw, where))
    for name in space.methods():
        TrainConfig.from_dict(space.base_for(name), where=f"{where}: base of method {name}")
    _check_values(space)
    space.target_combos()
    return space


def _resources(raw: dict, where: str, smoke: bool) -> dict:
    """``resources`` (with ``smoke.resources`` over it in a smoke run), checked: {name: number}."""
    resources = dict(raw.get("resources") or {})
    smoke_part = (raw.get("smoke") or {}).get("resources") if isinstance(raw.get("smoke"), dict) else None
    for section, part in (("resources", raw.get("resources")), ("smoke.resources", smoke_part)):
        if part is not None and not isinstance(part, dict):
            raise UserError(f"{where}: {section} must be a mapping of {', '.join(RESOURCE_KEYS)}")
    if smoke and smoke_part:
        resources.update(smoke_part)
    for key, value in resources.items():
        if key not in RESOURCE_KEYS:
            raise UserError(f"{where}: resources.{key}: unknown (allowed: {', '.join(RESOURCE_KEYS)})")
        kind = RESOURCE_KEYS[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
            raise UserError(f"{where}: resources.{key}: expected a{'n integer' if kind is int else ' number'}, found {value!r}")
        resources[key] = kind(value)
    return resources


def _tasks(raw: dict, where: str) -> Optional[tuple[str, ...]]:
    tasks = raw.get("tasks")
    if tasks is None:
        return None
    if not isinstance(tasks, list) or not tasks or any(t not in TASKS for t in tasks):
        raise UserError(f"{where}: tasks must be a non-empty list of {', '.join(TASKS)}, found {tasks!r}")
    return tuple(tasks)


def _agreed(parts: dict, field: str, where: str):
    """A composed space's ``resources`` / ``tasks`` when the search does not set them: its files',
    which must then agree."""
    values = {name: getattr(part, field) for name, part in parts.values()}
    distinct = {json.dumps(v, sort_keys=True) for v in values.values()}
    if len(distinct) > 1:
        raise UserError(f"{where}: the composed files ask for different {field} "
                        f"({'; '.join(f'{n}: {v}' for n, v in values.items())}): set {field} in {Path(where).name}")
    return next(iter(values.values()))


def _parse_param(name: Any, spec: Any, earlier: list[Param], where: str) -> Param:
    at = f"{where}: params.{name}"
    if not isinstance(name, str) or not _config_field(name):
        raise UserError(f"{at}: not a configuration field (use dotted paths such as optim.lr, student.embed_dim)")
    if not isinstance(spec, dict) or "type" not in spec:
        raise UserError(f"{at}: expected a mapping with a type (float, int or categorical)")
    kind = spec["type"]
    if kind not in PARAM_KEYS:
        raise UserError(f"{at}: unknown type {kind!r} (float, int or categorical)")
    unknown = sorted(set(spec) - PARAM_KEYS[kind])
    if unknown:
        raise UserError(f"{at}: unknown key(s) {', '.join(unknown)} for type {kind}")
    when = _parse_when(spec.get("when"), earlier, at)
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise UserError(f"{at}: choices must be a non-empty list")
        if len({repr(c) for c in choices}) != len(choices):
            raise UserError(f"{at}: choices repeat a value")
        return Param(name, kind, choices=tuple(choices), when=when)
    low, high = spec.get("low"), spec.get("high")
    for bound, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{at}: {bound} must be a number, found {value!r}")
    if kind == "int" and not (float(low).is_integer() and float(high).is_integer()):
        raise UserError(f"{at}: an int range needs integer bounds, found [{low}, {high}]")
    if not low < high:
        raise UserError(f"{at}: empty or inverted range [{low}, {high}] (low must be < high)")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise UserError(f"{at}: log must be true or false")
    if log and low <= 0:
        raise UserError(f"{at}: a log range needs low > 0, found {low}")
    step = spec.get("step")
    if step is not None and (isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0):
        raise UserError(f"{at}: step must be a positive number")
    if step is not None and log:
        raise UserError(f"{at}: step and log cannot be combined")
    return Param(name, kind, low=low, high=high, log=log, step=step, when=when)


def _parse_when(when: Any, earlier: list[Param], at: str) -> Optional[dict[str, tuple]]:
    if when is None:
        return None
    if not isinstance(when, dict) or not when:
        raise UserError(f"{at}: when must map earlier parameters to values, e.g. when: {{targets.labels: soft}}")
    by_name = {p.name: p for p in earlier}
    out = {}
    for ref, allowed in when.items():
        if ref not in by_name:
            raise UserError(f"{at}: condition on unknown parameter {ref!r} (conditions may only use parameters defined above)")
        allowed = tuple(allowed) if isinstance(allowed, list) else (allowed,)
        target = by_name[ref]
        for value in allowed:
            if target.type == "categorical" and value not in target.choices:
                raise UserError(f"{at}: condition value {value!r} is not a choice of {ref} {list(target.choices)}")
            if target.type != "categorical" and not (target.low <= value <= target.high):
                raise UserError(f"{at}: condition value {value!r} is outside the range of {ref}")
        out[ref] = allowed
    return out


def _active(p: Param, values: dict) -> bool:
    return not p.when or all(values.get(k, _MISSING) in allowed for k, allowed in p.when.items())


def _check_values(space: SearchSpace) -> None:
    """Build configs at every choice and range end (and every combination, when few) so a
    value the configuration rejects fails now, not in trial 7 an hour from now. A
    conditional parameter is tried with its conditions met (their first allowed values)."""
    for p in space.params:
        for value in p.values_to_check():
            values = {k: allowed[0] for k, allowed in (p.when or {}).items()}
            values[p.name] = value
            try:
                space.config(values)
            except UserError as e:
                raise UserError(f"{space.path}: params.{p.name} = {value!r} is not a valid setting: {_reason(e)}") from None
    grids = [[(p.name, v) for v in p.values_to_check()] for p in space.params]
    combos = 1
    for g in grids:
        combos *= len(g)
    if 1 < combos <= 512:
        for combo in itertools.product(*grids):
            values: dict = {}
            for p, (name, value) in zip(space.params, combo):
                if _active(p, values):
                    values[name] = value
            try:
                space.config(values)
            except UserError as e:
                raise UserError(f"{space.path}: the combination {values} is not a valid setting: {_reason(e)}") from None


def _reason(error: UserError) -> str:
    return str(error).rsplit(": ", 1)[-1]

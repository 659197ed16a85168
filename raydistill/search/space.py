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

``when`` makes a parameter conditional: it is sampled only if every named (earlier)
parameter took one of the listed values; otherwise the base value applies. The whole file
is validated before anything starts (:func:`load_space`): unknown keys, empty or inverted
ranges, conditions on unknown parameters, and values the configuration would reject
(every choice and both ends of every range are tried) are :class:`UserError`\\ s that
name the file and the parameter.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from raydistill.config import METHODS, TrainConfig
from raydistill.errors import UserError
from raydistill.utils import read_yaml

TOP_KEYS = {"method", "description", "base", "smoke", "params"}
PARAM_KEYS = {
    "float": {"type", "low", "high", "log", "step", "when"},
    "int": {"type", "low", "high", "log", "step", "when"},
    "categorical": {"type", "choices", "when"},
}
MAX_TARGET_COMBOS = 64  # (teacher layer, K) pairs precomputed before the first trial


@dataclass(frozen=True)
class Param:
    name: str  # dotted TrainConfig path, e.g. "optim.lr"
    type: str  # float | int | categorical
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    step: Optional[float] = None
    choices: Optional[tuple] = None
    when: Optional[dict[str, tuple]] = None  # {earlier param: allowed values}

    def values_to_check(self) -> list:
        """Every choice, or both ends of the range: what validation tries in a config."""
        return list(self.choices) if self.type == "categorical" else [self.low, self.high]

    def finite_values(self) -> Optional[list]:
        """All values this parameter can take, if that set is small and discrete."""
        if self.type == "categorical":
            return list(self.choices)
        if self.type == "int" and not self.log:
            step = int(self.step or 1)
            return list(range(int(self.low), int(self.high) + 1, step))
        return None

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

    def sample(self, trial) -> dict[str, Any]:
        """Optuna define-by-run: sample the parameters whose conditions hold; flat {name: value}."""
        values: dict[str, Any] = {}
        for p in self.params:
            if p.when and not all(values.get(k, _MISSING) in allowed for k, allowed in p.when.items()):
                continue
            values[p.name] = p.suggest(trial)
        return values

    def sample_for_ray(self, trial) -> None:
        """The define-by-run function for Ray's OptunaSearch (it records what was suggested)."""
        self.sample(trial)

    def config(self, values: dict[str, Any]) -> TrainConfig:
        """The full TrainConfig of a trial: base with the sampled values applied."""
        d = copy.deepcopy(self.base)
        for name, value in values.items():
            set_path(d, name, value)
        return TrainConfig.from_dict(d, where=f"{self.path} (trial values {values})")

    def base_config(self) -> TrainConfig:
        return TrainConfig.from_dict(copy.deepcopy(self.base), where=f"{self.path}: base")

    def target_combos(self) -> list[tuple[int, int]]:
        """Every (teacher layer, K) a trial may ask for: all of them are computed before trial 1."""
        base = self.base_config().targets
        layers = self._finite("targets.teacher_layer", base.teacher_layer)
        ks = self._finite("targets.num_clusters", base.num_clusters)
        combos = sorted(itertools.product(layers, ks))
        if len(combos) > MAX_TARGET_COMBOS:
            raise UserError(f"{self.path}: {len(combos)} (teacher_layer, num_clusters) pairs; at most {MAX_TARGET_COMBOS}")
        return combos

    def _finite(self, name: str, base_value: int) -> list[int]:
        param = next((p for p in self.params if p.name == name), None)
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
    """Whether a dotted path names a field of TrainConfig (e.g. ``student.embed_dim``)."""
    cls: Any = TrainConfig
    for part in path.split("."):
        if not dataclasses.is_dataclass(cls):
            return False
        hints = typing.get_type_hints(cls)
        if part not in hints:
            return False
        cls = hints[part]
    return not dataclasses.is_dataclass(cls)


def load_space(path: str | Path, *, smoke: bool = False) -> SearchSpace:
    """Read and fully validate a search-space file."""
    where = str(path)
    raw = read_yaml(path, "search space")
    if not isinstance(raw, dict):
        raise UserError(f"{where}: expected a mapping at the top level")
    unknown = sorted(set(raw) - TOP_KEYS)
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(TOP_KEYS))})")
    method = raw.get("method", "dicehubert")
    if method not in METHODS:
        raise UserError(f"{where}: unknown method {method!r} (choose from {', '.join(METHODS)})")
    for section in ("base", "smoke"):
        if not isinstance(raw.get(section, {}), dict):
            raise UserError(f"{where}: {section} must be a mapping")
    base = merge({"method": method}, raw.get("base") or {})
    if smoke:
        base = merge(base, raw.get("smoke") or {})
    TrainConfig.from_dict(copy.deepcopy(base), where=f"{where}: base")  # key and value check

    params_raw = raw.get("params") or {}
    if not isinstance(params_raw, dict):
        raise UserError(f"{where}: params must be a mapping of parameter name to definition")
    params: list[Param] = []
    for name, spec in params_raw.items():
        params.append(_parse_param(name, spec, params, where))
    space = SearchSpace(where, method, str(raw.get("description", "")), base, tuple(params))
    _check_values(space)
    space.target_combos()
    return space


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


def _check_values(space: SearchSpace) -> None:
    """Build configs at every choice and range end (and every combination, when few) so a
    value the configuration rejects fails now, not in trial 7 an hour from now."""
    for p in space.params:
        for value in p.values_to_check():
            try:
                space.config({p.name: value})
            except UserError as e:
                raise UserError(f"{space.path}: params.{p.name} = {value!r} is not a valid setting: {_reason(e)}") from None
    grids = [[(p.name, v) for v in p.values_to_check()] for p in space.params]
    combos = 1
    for g in grids:
        combos *= len(g)
    if 1 < combos <= 512:
        for combo in itertools.product(*grids):
            values = dict(combo)
            try:
                space.config(values)
            except UserError as e:
                raise UserError(f"{space.path}: the combination {values} is not a valid setting: {_reason(e)}") from None


def _reason(error: UserError) -> str:
    return str(error).rsplit(": ", 1)[-1]

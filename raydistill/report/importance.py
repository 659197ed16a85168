"""Parameter importances on an in-memory Optuna study rebuilt from MLflow.

The search's own Optuna study records trials ASHA stopped as PRUNED, and Optuna's
importance evaluators leave pruned trials out. Here every scored trial counts, stopped ones
with the score their last checkpoint got afterwards: the study is rebuilt from the MLflow rows
with ``optuna.trial.create_trial``. Parameters keep the distributions the search sampled them
from (the search run's ``search_space.yaml``); for searches logged before that file existed
they are inferred from the values seen.
"""

from __future__ import annotations

import math
import warnings
from typing import Optional

from raydistill.report.collect import SearchData
from raydistill.search.space import Param, SearchSpace
from raydistill.utils import one_line

EVALUATORS = ("fANOVA", "PED-ANOVA")


def space_of(data: SearchData) -> Optional[SearchSpace]:
    """The search's parameters as a SearchSpace (parameters only), from its search_space.yaml."""
    if not data.space or "params" not in data.space:
        return None
    params = []
    for p in data.space["params"]:
        d = dict(p)
        if "choices" in d:
            d["choices"] = tuple(d["choices"])
        if "when" in d:
            d["when"] = {k: tuple(v) for k, v in d["when"].items()}
        params.append(Param(**d))
    return SearchSpace(path=data.space.get("path", ""), method="", description="", base={}, params=tuple(params))


def study(data: SearchData):
    """A single-objective in-memory study of every scored trial (the search's first objective),
    trial numbers in the order the trials started."""
    import optuna

    name, mode = data.objective
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    space = space_of(data)
    inferred = None if space is not None else _inferred(data)
    for row in data.scored():
        logged = {k: row[k] for k in data.knobs if k in row}
        if space is not None:
            values = space.optuna_values(logged)
            if values is None:
                continue
            distributions = space.distributions(values)
        else:
            values = {k: _parsed(v, inferred[k]) for k, v in logged.items() if k in inferred}
            distributions = {k: inferred[k] for k in values}
        out.add_trial(optuna.trial.create_trial(params=values, distributions=distributions, value=row[name],
                                                user_attrs={"run_name": row["run_name"], "status": row["status"]}))
    return out


def importances(study_) -> dict[str, dict[str, float]]:
    """{evaluator: {parameter: importance}} (fANOVA and PED-ANOVA), over the parameters every
    scored trial has; an evaluator that cannot run on this study maps to its reason instead."""
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator

    out: dict = {}
    evaluators = {"fANOVA": FanovaImportanceEvaluator(seed=0), "PED-ANOVA": PedAnovaImportanceEvaluator()}
    for name, evaluator in evaluators.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                found = optuna.importance.get_param_importances(study_, evaluator=evaluator)
                out[name] = {k: float(v) for k, v in found.items()}
        except Exception as e:  # noqa: BLE001 - too few trials, or no parameter every trial has
            out[name] = one_line(e, 160, first_line=True, with_type=True)
    return out


def _inferred(data: SearchData) -> dict:
    """Distributions from the values the trials logged: numbers as a float range, the rest as
    choices; a knob with one value is left out (it cannot matter)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    out = {}
    for knob in data.knobs:
        seen = sorted({row[knob] for row in data.scored() if knob in row})
        if len(seen) < 2:
            continue
        numbers = [_number(v) for v in seen]
        if all(n is not None for n in numbers):
            out[knob] = FloatDistribution(min(numbers), max(numbers))
        else:
            out[knob] = CategoricalDistribution(seen)
    return out


def _parsed(text: str, distribution):
    from optuna.distributions import FloatDistribution

    return float(text) if isinstance(distribution, FloatDistribution) else text


def _number(text: str) -> Optional[float]:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None

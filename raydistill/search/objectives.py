"""What a search optimises: ``overall_score`` alone, or with the student's size (multi-objective).

A search-space file may name them (default: ``{overall_score: max}``)::

    objectives: {overall_score: max, params: min}          # or macs_per_second: min

and ``raydistill search --objectives overall_score:max,params:min`` overrides the file. Every
trial reports ``params`` (the student's parameters at inference) and ``macs_per_second``
(multiply-accumulates per second of 16 kHz audio) with each result, whatever the objectives,
so ``raydistill export --pareto --objectives ...`` can also rank a search run with others.

The objectives are an ordered mapping ``{metric: "max" | "min"}``; the search logs them on its
MLflow parent run as the param ``objectives`` in the CLI spelling (:func:`format_objectives`).
This module imports neither Ray nor MLflow.
"""

from __future__ import annotations

from typing import Any, Optional

from raydistill.errors import UserError
from raydistill.utils import is_number

# metric -> what it is (the only metrics an objective may name)
METRICS = {
    "overall_score": "mean(100 - PER, SID accuracy) of the full evaluation (higher is better)",
    "params": "the student's parameters at inference",
    "macs_per_second": "the student's multiply-accumulates per second of 16 kHz audio",
}
MODES = ("max", "min")
MAX_OBJECTIVES = 3
DEFAULT = {"overall_score": "max"}


def parse_objectives(value: Any, where: str = "--objectives") -> dict[str, str]:
    """Validate objectives given as a mapping (a search-space file) or as the CLI's
    ``metric:mode,metric:mode`` string; ``None`` is the default (overall_score, max).

    Rules: 1 to 3 objectives, known metrics (:data:`METRICS`), modes ``max``/``min``, each
    metric once, and ``overall_score`` among them, maximised. A violation is a one-line
    :class:`UserError` that starts with ``where``.
    """
    if value is None:
        return dict(DEFAULT)
    if isinstance(value, str):
        pairs = []
        for item in value.split(","):
            name, sep, mode = item.strip().partition(":")
            if not name.strip() or not sep:
                raise UserError(f"{where}: expected metric:mode pairs separated by commas, e.g. "
                                f"overall_score:max,params:min (found {value!r})")
            pairs.append((name.strip(), mode.strip()))
    elif isinstance(value, dict):
        pairs = list(value.items())
    else:
        raise UserError(f"{where}: expected a mapping of metric to max/min, e.g. {{overall_score: max, params: min}}")
    if not 1 <= len(pairs) <= MAX_OBJECTIVES:
        raise UserError(f"{where}: 1 to {MAX_OBJECTIVES} objectives, found {len(pairs)}")
    out: dict[str, str] = {}
    for name, mode in pairs:
        if name not in METRICS:
            raise UserError(f"{where}: unknown objective {name!r} (choose from {', '.join(METRICS)})")
        if name in out:
            raise UserError(f"{where}: objective {name} is given twice")
        if mode not in MODES:
            raise UserError(f"{where}: objective {name}: mode must be max or min, found {mode!r}")
        out[name] = mode
    if "overall_score" not in out:
        raise UserError(f"{where}: the objectives must include overall_score (found {', '.join(out)})")
    if out["overall_score"] != "max":
        raise UserError(f"{where}: overall_score is a score (higher is better): use overall_score:max")
    return out


def format_objectives(objectives: dict[str, str]) -> str:
    """The CLI spelling, also the MLflow parent-run param: ``overall_score:max,params:min``."""
    return ",".join(f"{name}:{mode}" for name, mode in objectives.items())


def resolve_objectives(cli: Optional[str], file_value: Optional[dict[str, str]]) -> dict[str, str]:
    """The CLI's ``--objectives`` if given, else the search-space file's, else the default."""
    if cli is not None:
        return parse_objectives(cli, "--objectives")
    return dict(file_value) if file_value else dict(DEFAULT)


def objective_values(metrics: dict, objectives: dict, params: Optional[dict] = None) -> Optional[list[float]]:
    """A run's values of ``objectives`` (its MLflow ``metrics``), in their order; None unless each
    is a finite number. Given the run's ``params``, a ``params`` objective the metrics lack (a
    search whose trials did not report it) is read from its ``params`` param."""
    values = []
    for name in objectives:
        value = metrics.get(name)
        if value is None and name == "params" and params is not None:
            try:
                value = float(params["params"])
            except (KeyError, ValueError):
                value = None
        if not is_number(value):
            return None
        values.append(float(value))
    return values

"""The search report: what a search found, rebuilt from its MLflow runs.

``build_report`` writes into a directory:

* ``trials.csv`` and ``leaderboard.txt``: every trial and reference run with its status, knobs,
  scores, size and costs (``collect.py``, ``leaderboard.py``);
* ``importances.json``: fANOVA and PED-ANOVA importances (``importance.py``);
* ``figures/*.png`` (``figures.py``) and ``report.html``, one page with them inlined (``page.py``).

``log_report`` puts it under ``report/`` in the search run's artifacts, adds the table as an
MLflow table (``report/trials_table.json``) and a short Markdown summary as the run's
description, with links to the best trial and the reference runs. A search does both at its
end; ``raydistill report`` rebuilds them on demand (docs/reading-a-search.md).
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from raydistill.report import figures as fig
from raydistill.report.collect import SearchData, collect
from raydistill.tracking.mlflow import CONFIRMED
from raydistill.report.importance import importances, study
from raydistill.report.leaderboard import columns, render, rows
from raydistill.report import page
from raydistill.utils import is_number, log, one_line

NOTE = "mlflow.note.content"  # the run description MLflow's run page shows, as Markdown


@dataclass
class Report:
    data: SearchData
    dir: Path
    figures: dict = field(default_factory=dict)  # name -> Path, or the reason it was not drawn
    importances: dict = field(default_factory=dict)
    seconds: float = 0.0


def build_report(client, experiment_id: str, search_id: Optional[str], out: Path) -> Report:
    started = time.monotonic()
    data = collect(client, experiment_id, search_id, details=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(exist_ok=True)
    (out / "trials.csv").write_text(render(data, "csv"))
    (out / "leaderboard.txt").write_text(render(data, "table"))
    report = Report(data, out)
    in_memory = study(data)
    report.importances = importances(in_memory)
    (out / "importances.json").write_text(json.dumps(report.importances, indent=2) + "\n")
    top = _most_important(report.importances)
    draw = {
        "history": lambda p: fig.history(data, p),
        "importance": lambda p: fig.importance(report.importances, p, len(in_memory.trials)),
        "parallel": lambda p: fig.optuna_plot("parallel", in_memory, p, top),
        "slice": lambda p: fig.optuna_plot("slice", in_memory, p, top),
        "curves": lambda p: fig.curves(data, p),
        "methods": lambda p: fig.methods(data, p),
        "pareto": lambda p: fig.pareto(data, p),
    }
    for name, fn in draw.items():
        try:
            report.figures[name] = fn(out / "figures" / f"{name}.png")
        except Exception as e:  # noqa: BLE001 - one figure that cannot be drawn does not stop the report
            report.figures[name] = one_line(e, 200, first_line=True)
    report.seconds = time.monotonic() - started
    page.write(data, report.figures, report.importances, out / "report.html", report.seconds)
    return report


def write(client, experiment_id: str, search_id: Optional[str], out: Optional[Path] = None, *,
          log_to_run: bool) -> Report:
    """Build the report into ``out`` (default: a temporary directory, gone on return: then only
    the returned report's data and timing are of use) and, with ``log_to_run``, put it on the
    search's MLflow run. What a search does at its end and ``raydistill report --out/--log``."""
    with tempfile.TemporaryDirectory(prefix="raydistill-report-") as tmp:
        report = build_report(client, experiment_id, search_id, out or Path(tmp))
        if log_to_run:
            log_report(client, report)
    return report


def log_report(client, report: Report) -> None:
    """The report under ``report/`` in the search run's artifacts, its table as an MLflow table,
    and a summary as the run's description (replacing an earlier report's)."""
    data = report.data
    run_id = data.search_run.info.run_id
    client.log_artifacts(run_id, str(report.dir), artifact_path="report")
    board = rows(data)
    keys = columns(data)
    client.log_table(run_id, data={k: [_cell(r.get(k)) for r in board] for k in keys},
                     artifact_file="report/trials_table.json")
    client.set_tag(run_id, NOTE, summary_markdown(data, report))
    log(f"report: {len(data.trials)} trials, {sum(isinstance(p, Path) for p in report.figures.values())} figures "
        f"on MLflow run {run_id} (artifacts report/)")


def summary_markdown(data: SearchData, report: Report) -> str:
    name = data.objective[0]
    ranked = data.ranked()[:len(data.scored())]
    link = lambda r: f"[{r['run_name']}](#/experiments/{data.experiment_id}/runs/{r['run_id']})"  # noqa: E731
    lines = [f"**Search {data.search_id}**: {len(data.trials)} trials, {len(ranked)} scored. "
             "Full report: artifacts, `report/report.html`; every trial: `report/trials.csv`."]
    if ranked:
        best = ranked[0]
        confirmed = best.get(CONFIRMED)
        lines.append(f"Best: {link(best)}, {name} {best[name]:.2f}" + (
            f"; confirmed {confirmed:.2f} ± {best.get('confirmed_spread', 0):.2f} over "
            f"{int(best.get('confirmed_seeds', 0))} evaluation seeds with tuned head learning rates "
            "(confirmed trials are ranked by it)." if is_number(confirmed) else "."))
    if data.references:
        lines.append("References: " + ", ".join(
            f"{link(r)} {r[name]:.2f}" if is_number(r.get(name)) else link(r)
            for r in data.references) + ".")
    fanova = report.importances.get("fANOVA")  # a dict, or why it could not be computed
    top = list(fanova.items()) if isinstance(fanova, dict) else []
    if top:
        lines.append("Most important knobs (fANOVA): " + ", ".join(f"`{k}` {v:.2f}" for k, v in top[:3]) + ".")
    return "\n\n".join(lines)


def _most_important(scores: dict, k: int = 6) -> Optional[list[str]]:
    """The ``k`` knobs fANOVA (else PED-ANOVA) ranks first; None (every knob) without importances."""
    for evaluator in ("fANOVA", "PED-ANOVA"):
        if isinstance(scores.get(evaluator), dict) and scores[evaluator]:
            return list(scores[evaluator])[:k]
    return None


def _cell(value):
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return value

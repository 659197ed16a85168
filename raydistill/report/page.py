"""``report.html``: one self-contained page (figures inlined) that ties the report together,
readable from MLflow's artifact view, a browser, or a file sent to a colleague."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from raydistill.report.collect import SearchData
from raydistill.tracking.mlflow import CONFIRMED
from raydistill.report.leaderboard import rows
from raydistill.utils import is_number

CAPTIONS = {
    "history": "Is it worth running more trials? Each trial's score in the order it started, the best so far, "
               "and the reference runs' scores.",
    "importance": "Which knobs mattered: fANOVA and PED-ANOVA importances over every scored trial (ASHA-stopped "
                  "ones with their post-evaluation scores).",
    "parallel": "Each trial's knob values and score (Optuna's parallel coordinates).",
    "slice": "The score against each knob (Optuna's slice plot).",
    "curves": "Learning curves: probe score at every ASHA rung and training loss, by step.",
    "methods": "Score by method.",
    "pareto": "What the score costs in size: the score against parameters and against MACs per second, "
              "with the Pareto front.",
}
STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}td{white-space:nowrap}
td.k{white-space:normal;font-size:11px;min-width:24em}img{max-width:100%;border:1px solid #eee}
.note{color:#666;font-size:13px}code{background:#f3f3f3;padding:1px 4px}"""


def write(data: SearchData, figures: dict, scores: dict, path: Path, seconds: float) -> Path:
    name, mode = data.objective
    counts: dict[str, int] = {}
    for r in data.trials:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    params = data.search_run.data.params
    prov = data.search_run.data.tags
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(data.search_id)}</title>"
             f"<style>{STYLE}</style></head><body>",
             f"<h1>Search {_e(data.search_id)}</h1>",
             "<p>" + ", ".join(f"{n} {_e(s)}" for s, n in sorted(counts.items()))
             + f" of {len(data.trials)} trials; sorted by <b>{_e(name)}</b> ({mode}). "
             f"Space <code>{_e(params.get('space', '?'))}</code>, methods {_e(params.get('method', '?'))}, "
             f"corpus <code>{_e(params.get('corpus_key', '?'))}</code>, teacher {_e(params.get('teacher', '?'))} "
             f"<code>{_e(params.get('teacher_key', '?'))}</code>"
             + (f", warm-started from {_e(params['warm_start'])}" if params.get("warm_start") else "") + ".</p>",
             "<h2>Leaderboard</h2>", _board(data), "<p class='note'>* scored from its last checkpoint after ASHA "
             "stopped it. Every column of every trial: <code>trials.csv</code> (and the MLflow table "
             "<code>trials_table.json</code>).</p>"]
    for key, caption in CAPTIONS.items():
        if key not in figures:
            continue
        parts.append(f"<h2>{key.capitalize()}</h2><p>{_e(caption)}</p>")
        figure = figures[key]
        if isinstance(figure, Path):
            data64 = base64.b64encode(figure.read_bytes()).decode()
            parts.append(f"<img alt='{key}' src='data:image/png;base64,{data64}'> "
                         f"<p class='note'>{figure.name}</p>")
        else:
            parts.append(f"<p class='note'>not drawn: {_e(figure)}</p>")
        if key == "importance":
            parts.append(_importances(scores))
    code = {k.rsplit(".", 1)[-1]: v for k, v in prov.items() if k.startswith("raydistill.provenance.")}
    parts.append("<h2>Provenance</h2><p class='note'>"
                 + ", ".join(f"{_e(k)} <code>{_e(v)}</code>" for k, v in sorted(code.items()))
                 + f". Report written in {seconds:.1f}s.</p></body></html>")
    path.write_text("\n".join(parts))
    return path


def _board(data: SearchData, top: int = 25) -> str:
    name = data.objective[0]
    head = ["#", "trial", "status", "method", name, "confirmed", "superb_score", "probe_score", "params", "knobs"]
    out = ["<table><tr>" + "".join(f"<th class='l'>{h}</th>" if h in ("trial", "status", "method", "knobs")
                                   else f"<th>{h}</th>" for h in head) + "</tr>"]
    board = rows(data)
    trials = [r for r in board if r["kind"] == "trial"][:top] + [r for r in board if r["kind"] != "trial"]
    for r in trials:
        link = f"/#/experiments/{data.experiment_id}/runs/{r['run_id']}"
        knobs = ", ".join(f"{k}={r[k]}" for k in data.knobs if k in r)
        cells = [str(r["rank"]), f"<a href='{link}' target='_top'>{_e(r['run_name'])}</a>",
                 _e(r["status"]) + ("*" if r.get("from_checkpoint") else ""), _e(r.get("method", "")),
                 _f(r.get(name), 2),
                 f"{r[CONFIRMED]:.2f} ± {r.get('confirmed_spread', 0):.2f}" if is_number(r.get(CONFIRMED)) else "-",
                 _f(r.get("superb_score"), 0), _f(r.get("probe_score"), 2),
                 f"{r['params'] / 1e6:.2f}M" if is_number(r.get("params")) else "-", _e(knobs)]
        css = {1: "l", 2: "l", 3: "l", 9: "l k"}
        out.append("<tr>" + "".join(f"<td class='{css[i]}'>{c}</td>" if i in css else f"<td>{c}</td>"
                                    for i, c in enumerate(cells)) + "</tr>")
    return "".join(out) + "</table>"


def _importances(scores: dict) -> str:
    out = []
    for evaluator, values in scores.items():
        if isinstance(values, dict):
            out.append(f"<p>{evaluator}: " + ", ".join(f"{_e(k)} {v:.2f}" for k, v in values.items()) + "</p>")
        else:
            out.append(f"<p class='note'>{evaluator} not computed: {_e(values)}</p>")
    return "".join(out)


def _f(v, digits: int) -> str:
    return f"{v:.{digits}f}" if is_number(v) else "-"


def _e(text) -> str:
    return html.escape(str(text))

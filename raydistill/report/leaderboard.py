"""``raydistill report``'s terminal leaderboard: trials best first, then the reference runs.

For a user on a cluster with SSH and no forwarded UI; works while the search runs. Formats:
``table`` (aligned text), ``csv`` and ``json`` (every column of the report's trials table).
"""

from __future__ import annotations

import csv
import io
import json

from raydistill.report.collect import CONFIRM_COLUMNS, COST_COLUMNS, SCORE_COLUMNS, SearchData
from raydistill.tracking.mlflow import CONFIRMED
from raydistill.utils import is_number

FORMATS = ("table", "csv", "json")


def rows(data: SearchData) -> list[dict]:
    """Trials ranked by the objective (rank empty for unscored ones), then the references."""
    out = []
    name = data.objective[0]
    for rank, row in enumerate(data.ranked(), 1):
        out.append({"rank": rank if is_number(row.get(name)) else "", **row})
    return out + [{"rank": "", **ref} for ref in data.references]


def columns(data: SearchData) -> list[str]:
    return ["rank", "run_name", "kind", "status", "from_checkpoint", "method", *data.knobs, *SCORE_COLUMNS,
            *CONFIRM_COLUMNS, *COST_COLUMNS, "run_id"]


def render(data: SearchData, fmt: str) -> str:
    board = rows(data)
    if fmt == "json":
        return json.dumps([{k: r.get(k) for k in columns(data) if k in r} for r in board], indent=2) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns(data), extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(board)
        return buf.getvalue()
    return _table(data, board)


def _table(data: SearchData, board: list[dict]) -> str:
    name, mode = data.objective
    head = ["#", "trial", "status", name, "confirmed", "superb", "probe", "params", "GMAC/s", "knobs"]
    lines = []
    for r in board:
        status = r["status"] + ("*" if r.get("from_checkpoint") else "")
        knobs = " ".join(f"{k.rsplit('.', 1)[-1]}={_short(r[k])}" for k in data.knobs if k in r)
        confirmed = (f"{r[CONFIRMED]:.2f} ± {r.get('confirmed_spread', 0):.2f}" if is_number(r.get(CONFIRMED)) else "-")
        lines.append([str(r["rank"]), r["run_name"], status, _num(r.get(name), 2), confirmed, _num(r.get("superb_score"), 0),
                      _num(r.get("probe_score"), 2), _millions(r.get("params")),
                      _num(r.get("macs_per_second") / 1e9 if is_number(r.get("macs_per_second")) else None, 2), knobs])
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(head)]
    right = {0, 3, 4, 5, 6, 7, 8}

    def fmt(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    counts: dict[str, int] = {}
    for r in data.trials:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    title = (f"search {data.search_id}: {len(data.trials)} trials ("
             + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + f"), sorted by {name} ({mode})")
    out = [title, fmt(head), fmt(["-" * w for w in widths])]
    trials = [line for line, r in zip(lines, board) if r["kind"] == "trial"]
    refs = [line for line, r in zip(lines, board) if r["kind"] != "trial"]
    out += [fmt(line) for line in trials]
    if refs:
        out += [fmt(["-" * w for w in widths])] + [fmt(line) for line in refs]
    out.append("* scored from its last checkpoint after ASHA stopped it")
    if any(is_number(r.get(CONFIRMED)) for r in data.trials):
        out.append("confirmed: mean ± (max − min) over evaluation seeds, heads' learning rates tuned on dev "
                   "(search --confirm); confirmed trials rank first, by it")
    return "\n".join(out) + "\n"


def _num(value, digits: int) -> str:
    return f"{value:.{digits}f}" if is_number(value) else "-"


def _millions(value) -> str:
    return f"{value / 1e6:.2f}M" if is_number(value) else "-"


def _short(text: str) -> str:
    try:
        value = float(text)
    except ValueError:
        return text
    return text if value.is_integer() and "e" not in text.lower() else f"{value:.3g}"

"""A study's table: every arm's mean ± spread over its training seeds, every comparison's verdict.

The spread of an arm is max − min over its seeds, and a comparison's is the larger of its two
arms' (``compare``'s rule). For a claim "A beats B" on a metric (error rates: lower is better):
``agrees`` if A's mean is ahead by more than the spread, ``disagrees`` if B's is, else
``inconclusive`` (the gap is inside the spread). ``no_worse`` ("A ≥ B") agrees unless B is
ahead by more than the spread. ``tradeoff`` (A saves MACs over B at little loss) agrees when A
saves at least ``min_saved`` of B's MACs and loses no more than the spread. ``pareto`` names the
arms on the front of overall_score against MACs per second (means). An arm with fewer than
two finished seeds has no spread: its comparisons are ``pending``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from raydistill.pareto import score_cost_front

LOWER_IS_BETTER = {"pr_per", "asr_wer", "asv_eer", "params", "macs_per_second"}
SHOWN = ("overall_score", "superb_score", "pr_per", "asr_wer", "ks_acc", "qbe_map", "sid_acc", "asv_eer", "ic_acc",
         "params", "macs_per_second", "train_seconds")
LABELS = {"overall_score": "overall", "superb_score": "superb", "pr_per": "PER", "asr_wer": "WER", "ks_acc": "KS",
          "qbe_map": "QbE", "sid_acc": "SID", "asv_eer": "EER", "ic_acc": "IC"}


def arm_stats(rows: list[dict]) -> dict:
    """{arm: {n, seeds, mean: {metric}, spread: {metric}}} from one dict per finished cell
    (``arm``, ``seed`` and its metrics)."""
    out: dict[str, dict] = {}
    for arm in dict.fromkeys(r["arm"] for r in rows):
        mine = [r for r in rows if r["arm"] == arm]
        keys = [k for k in SHOWN if all(_finite(r.get(k)) for r in mine)]
        out[arm] = {"n": len(mine), "seeds": sorted(r["seed"] for r in mine),
                    "mean": {k: float(np.mean([r[k] for r in mine])) for k in keys},
                    "spread": {k: float(np.ptp([r[k] for r in mine])) for k in keys},
                    "values": {k: [float(r[k]) for r in mine] for k in keys}}
    return out


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def judge(comparison, stats: dict) -> dict:
    """The verdict of one comparison (see the module's docstring) and the numbers behind it."""
    arms = [stats.get(a) for a in comparison.arms]
    if comparison.kind == "pareto":
        ready = {a: s for a, s in zip(comparison.arms, arms)
                 if s and {"overall_score", "macs_per_second"} <= set(s["mean"])}
        front = score_cost_front({a: (s["mean"]["overall_score"], s["mean"]["macs_per_second"]) for a, s in ready.items()})
        missing = [a for a in comparison.arms if a not in ready]
        verdict = ("front: " + ", ".join(front)) if len(ready) >= 2 else "pending"
        return {"verdict": verdict + (f" (not yet: {', '.join(missing)})" if missing and ready else ""),
                "front": front}
    a, b = arms
    metric = comparison.metric
    if not a or not b or a["n"] < 2 or b["n"] < 2 or metric not in a["mean"] or metric not in b["mean"]:
        return {"verdict": "pending", "reason": "fewer than 2 finished seeds"}
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    gap = sign * (a["mean"][metric] - b["mean"][metric])  # > 0: the first arm is ahead
    spread = max(a["spread"][metric], b["spread"][metric])
    out = {"metric": metric, "gap": gap, "spread": spread}
    if comparison.kind == "better":
        out["verdict"] = "agrees" if gap > spread else "disagrees" if gap < -spread else "inconclusive"
    elif comparison.kind == "no_worse":
        out["verdict"] = "disagrees" if gap < -spread else "agrees"
    else:  # tradeoff: the first arm saves MACs at little loss
        saved = 1.0 - a["mean"]["macs_per_second"] / b["mean"]["macs_per_second"]
        out["saved"] = saved
        if gap < -spread:
            out["verdict"] = "disagrees"
        elif saved < comparison.min_saved:
            out["verdict"] = f"disagrees (saves {100 * saved:.0f} % of MACs, not {100 * comparison.min_saved:.0f} %)"
        else:
            out["verdict"] = "agrees"
    return out


def fmt(stats: Optional[dict], key: str) -> str:
    if not stats or key not in stats["mean"]:
        return "–"
    mean = stats["mean"][key]
    if key == "macs_per_second":
        return f"{mean / 1e6:.0f}M"
    if key == "params":
        return f"{mean / 1e3:.0f}k"
    return f"{mean:.1f} ± {stats['spread'][key]:.1f}" if stats["n"] > 1 else f"{mean:.1f}"


@dataclass
class StudyTable:
    plan: object  # commands.study.Plan
    comparisons: tuple
    stats: dict  # arm_stats
    references: dict  # {"teacher": metrics, "fbank": metrics}
    results: dict  # comparison id -> judge()

    @classmethod
    def build(cls, plan, comparisons, rows: list[dict], references: dict) -> "StudyTable":
        stats = arm_stats(rows)
        return cls(plan, tuple(comparisons), stats, references, {c.id: judge(c, stats) for c in comparisons})

    @classmethod
    def from_runs(cls, done: dict, plan, comparisons, references: dict) -> "StudyTable":
        """From the study's finished cells (``{cell: MLflow run}``, ``commands.study.done_cells``);
        cells of an arm's older configuration are left out."""
        cells = {arm.cell(seed): (arm.name, seed) for arm in plan.arms.values() for seed in plan.seeds}
        rows = []
        for cell, run in done.items():
            if cell in cells and _finite(run.data.metrics.get("overall_score")):
                arm, seed = cells[cell]
                rows.append({"arm": arm, "seed": seed, **run.data.metrics})
        return cls.build(plan, comparisons, rows, references)

    def verdicts(self) -> dict:
        return {cid: r["verdict"] for cid, r in self.results.items()}

    def markdown(self) -> str:
        """The table: one block of rows per comparison (its arms), the claim and verdict on its first row."""
        lines = ["| comparison | arm | seeds | overall_score | task | params | MACs/s | paper's claim | verdict |",
                 "|---|---|---|---|---|---|---|---|---|"]
        for c in self.comparisons:
            r = self.results[c.id]
            verdict = r["verdict"]
            if "gap" in r:
                verdict += f" (gap {r['gap']:+.1f}, spread {r['spread']:.1f}" + (
                    f", saves {100 * r['saved']:.0f} % MACs" if "saved" in r else "") + ")"
            for i, name in enumerate(c.arms):
                s = self.stats.get(name)
                task = "" if c.task == "overall_score" else f"{LABELS.get(c.task, c.task)} {fmt(s, c.task)}"
                lines.append(" | ".join([
                    f"| {c.id}. {c.title}" if i == 0 else "|", name, str(s["n"]) if s else "0",
                    fmt(s, "overall_score"), task, fmt(s, "params"), fmt(s, "macs_per_second"),
                    c.claim if i == 0 else "", verdict if i == 0 else ""]) + " |")
        refs = ", ".join(f"{name} {m['overall_score']:.1f}" for name, m in self.references.items()
                         if _finite(m.get("overall_score")))
        tail = ["", f"Spread: max − min over the training seeds; references (one evaluation): {refs}."
                if refs else ""]
        notes = [f"- {c.id}: {c.note}" for c in self.comparisons if c.note]
        return "\n".join(lines + tail + (["", "Notes:"] + notes if notes else [])) + "\n"

    def arms_csv(self) -> str:
        import csv
        import io

        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["arm", "n", "seeds", *(f"{k}_{w}" for k in SHOWN for w in ("mean", "spread"))])
        for arm, s in self.stats.items():
            writer.writerow([arm, s["n"], " ".join(map(str, s["seeds"])),
                             *(s[w].get(k, "") for k in SHOWN for w in ("mean", "spread"))])
        return buf.getvalue()

    def as_json(self) -> dict:
        return {"study": self.plan.name, "seeds": list(self.plan.seeds), "arms": self.stats,
                "references": self.references,
                "comparisons": [{"id": c.id, "title": c.title, "claim": c.claim, "kind": c.kind, "arms": list(c.arms),
                                 "metric": c.metric, "task": c.task, **self.results[c.id]} for c in self.comparisons]}

    def figure(self, path: Path) -> Optional[Path]:
        """overall_score against MACs per second of every arm (mean, bars: min to max), teacher line."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        arms = {a: s for a, s in self.stats.items() if {"overall_score", "macs_per_second"} <= set(s["mean"])}
        if not arms:
            return None
        fig, ax = plt.subplots(figsize=(7.5, 4.8))
        for name, s in arms.items():
            values = s["values"]["overall_score"]
            x, y = s["mean"]["macs_per_second"] / 1e6, s["mean"]["overall_score"]
            ax.errorbar([x], [y], yerr=[[y - min(values)], [max(values) - y]], fmt="o", capsize=3)
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
        teacher = self.references.get("teacher", {}).get("overall_score")
        if _finite(teacher):
            ax.axhline(teacher, ls="--", color="grey", lw=1)
            ax.annotate("teacher", (ax.get_xlim()[0], teacher), fontsize=7, color="grey", va="bottom")
        ax.set_xlabel("student MACs per second of audio (millions)")
        ax.set_ylabel("overall_score (mean; bars: min–max over seeds)")
        ax.set_title(f"study {self.plan.name}: every arm")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path

    def write(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "table.md").write_text(self.markdown())
        (out / "arms.csv").write_text(self.arms_csv())
        (out / "study.json").write_text(json.dumps(self.as_json(), indent=2, default=float))
        self.figure(out / "arms.png")

    def log(self, client, run_id: str) -> None:
        """The same files under ``study/`` in the study run's artifacts."""
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            self.write(Path(tmp))
            client.log_artifacts(run_id, tmp, artifact_path="study")

"""The report's figures (PNG), each answering one question a user asks of a search.

* ``history``: is it worth running more trials? Every trial's score in the order it started,
  the best so far, and the teacher / random-init / FBank scores as reference lines.
* ``importance``: which knobs mattered (fANOVA and PED-ANOVA, ``importance.py``)?
* ``parallel`` and ``slice``: how each knob's values relate to the score (Optuna's plots, on
  the in-memory study, so stopped trials count with their post-evaluation scores).
* ``curves``: why a trial was stopped: probe score and loss by step, every trial.
* ``methods``: which method did best, for a search over several methods.
* ``pareto``: what the score costs in size: the score against parameters and against MACs
  per second of audio, the Pareto front marked.

A figure that cannot be drawn (too few scored trials, no knob that varies) is skipped with
its reason, which the report page shows in its place.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from raydistill.pareto import pareto_front
from raydistill.report.collect import SearchData
from raydistill.utils import is_number

STATUS_STYLE = {"completed": ("o", "C0"), "stopped": ("s", "C1"), "diverged": ("x", "C3"), "error": ("x", "C3"),
                "lost": ("x", "C7"), "running": ("^", "C2")}
REFERENCE_STYLE = {"teacher": "C2", "random_init": "C7", "fbank": "C4"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # colour-bar axes are not tight_layout's: it warns and does its best
        fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def history(data: SearchData, path: Path) -> Path:
    plt = _pyplot()
    name, mode = data.objective
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    best, best_x, best_y = None, [], []
    for i, row in enumerate(data.trials):
        value = row.get(name)
        if not is_number(value):
            continue
        marker, color = STATUS_STYLE.get(row["status"], ("o", "C0"))
        label = row["status"] + (" (scored from its last checkpoint)" if row["from_checkpoint"] else "")
        ax.scatter([i], [value], marker=marker, color=color, label=label, zorder=3)
        best = value if best is None or (value > best if mode == "max" else value < best) else best
        best_x.append(i)
        best_y.append(best)
    if best_x:
        ax.step(best_x, best_y, where="post", color="C0", alpha=0.5, label="best so far")
    for ref in data.references:
        if is_number(ref.get(name)):
            ax.axhline(ref[name], ls="--", lw=1, color=REFERENCE_STYLE.get(ref["run_name"], "k"),
                       label=f"{ref['run_name']} {ref[name]:.1f}")
    ax.set_xlabel("trial (in the order it started)")
    ax.set_ylabel(name)
    ax.set_title(f"{data.search_id}: optimisation history")
    _dedup_legend(ax)
    return _save(fig, path)


def importance(scores: dict, path: Path, trials: int) -> Path:
    plt = _pyplot()
    ok = {k: v for k, v in scores.items() if isinstance(v, dict) and v}
    if not ok:
        raise ValueError("; ".join(f"{k}: {v}" for k, v in scores.items()))
    fig, axes = plt.subplots(1, len(ok), figsize=(4.2 * len(ok), 0.45 * max(len(v) for v in ok.values()) + 1.6),
                             squeeze=False)
    for ax, (evaluator, values) in zip(axes[0], ok.items()):
        names = list(values)[::-1]
        ax.barh(names, [values[n] for n in names], color="C0")
        ax.set_title(f"{evaluator} ({trials} scored trials)")
        ax.set_xlabel("importance (sums to 1)")
    return _save(fig, path)


def optuna_plot(kind: str, study, path: Path, params=None) -> Path:
    """Optuna's matplotlib ``plot_parallel_coordinate`` / ``plot_slice`` of the study, over
    ``params`` (default: every knob; the report passes the most important few, so that knobs
    which did not matter do not crowd the plot)."""
    import matplotlib

    _pyplot()
    import optuna.visualization.matplotlib as ovm

    if len(study.trials) < 2 or not any(t.params for t in study.trials):
        raise ValueError("needs at least 2 scored trials with searched knobs")
    with warnings.catch_warnings(), matplotlib.rc_context():  # Optuna switches the global style to ggplot
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib backend experimental
        ax = {"parallel": ovm.plot_parallel_coordinate, "slice": ovm.plot_slice}[kind](study, params=params)
        first = ax.flat[0] if hasattr(ax, "flat") else ax
        fig = first.figure
        fig.set_size_inches(max(fig.get_size_inches()[0], 8), max(fig.get_size_inches()[1], 4.2))
        return _save(fig, path)


def curves(data: SearchData, path: Path) -> Path:
    plt = _pyplot()
    if not any(data.curves.values()):
        raise ValueError("no trial has logged a learning curve yet")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, row in enumerate(data.trials):
        curve = data.curves.get(row["run_id"], {})
        for ax, key in zip(axes, ("probe_score", "loss")):
            points = curve.get(key, [])
            if points:
                style = "-" if row["status"] == "completed" else ":"
                ax.plot([s for s, _ in points], [v for _, v in points], style, marker=".",
                        label=row["run_name"] if len(data.trials) <= 10 else None, color=f"C{i % 10}")
    for ax, key in zip(axes, ("probe_score (every ASHA rung)", "training loss")):
        ax.set_xlabel("step")
        ax.set_title(key)
    axes[0].text(0.01, 0.01, "dotted: stopped by ASHA, or not completed", transform=axes[0].transAxes, fontsize=8)
    if len(data.trials) <= 10:
        axes[1].legend(fontsize=7)
    return _save(fig, path)


def methods(data: SearchData, path: Path) -> Path:
    plt = _pyplot()
    name = data.objective[0]
    by_method: dict[str, list[float]] = {}
    for row in data.scored():
        by_method.setdefault(row["method"] or "?", []).append(row[name])
    if len(by_method) < 2:
        raise ValueError("one method only")
    fig, ax = plt.subplots(figsize=(7, 4.2))
    labels = sorted(by_method)
    ax.boxplot([by_method[m] for m in labels], showfliers=False)
    for i, m in enumerate(labels, 1):
        ax.scatter([i] * len(by_method[m]), by_method[m], color="C0", zorder=3, s=18)
    ax.set_xticks(range(1, len(labels) + 1), [f"{m}\n(n={len(by_method[m])})" for m in labels])
    for ref in data.references:
        if is_number(ref.get(name)):
            ax.axhline(ref[name], ls="--", lw=1, color=REFERENCE_STYLE.get(ref["run_name"], "k"), label=ref["run_name"])
    ax.set_ylabel(name)
    ax.set_title("score by method")
    _dedup_legend(ax)
    return _save(fig, path)


def pareto(data: SearchData, path: Path) -> Path:
    from matplotlib.ticker import EngFormatter, LogLocator, NullFormatter

    plt = _pyplot()
    name, mode = data.objective
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    drawn = False
    for ax, cost, label in zip(axes, ("params", "macs_per_second"), ("parameters", "MACs per second of audio")):
        rows = [r for r in data.scored() if is_number(r.get(cost))]
        if not rows:
            ax.set_visible(False)
            continue
        drawn = True
        xs, ys = [r[cost] for r in rows], [r[name] for r in rows]
        ax.scatter(xs, ys, color="C0", label="trials", zorder=3)
        front = sorted(pareto_front(list(zip(ys, xs)), [mode, "min"]), key=lambda i: xs[i])
        ax.plot([xs[i] for i in front], [ys[i] for i in front], "-o", color="C3", label="Pareto front", zorder=4)
        for ref in data.references:
            if is_number(ref.get(name)) and is_number(ref.get(cost)) and ref[cost] > 0:
                ax.scatter([ref[cost]], [ref[name]], marker="*", s=120,
                           color=REFERENCE_STYLE.get(ref["run_name"], "k"), label=ref["run_name"], zorder=5)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))  # 100k 200k 500k 1M: a log axis's
        ax.xaxis.set_major_formatter(EngFormatter())  # own minor labels overlap on a short range
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(label)
        ax.set_ylabel(name)
        ax.legend(fontsize=8)
    if not drawn:
        plt.close(fig)
        raise ValueError("no scored trial has its size logged")
    fig.suptitle(f"{name} against the student's size")
    return _save(fig, path)


def _dedup_legend(ax) -> None:
    handles, labels = ax.get_legend_handles_labels()
    seen = {}
    for h, label in zip(handles, labels):
        seen.setdefault(label, h)
    if seen:
        ax.legend(seen.values(), seen.keys(), fontsize=8, loc="best")

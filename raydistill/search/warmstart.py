"""``search --warm-start ID[,ID…]``: earlier searches' scored trials seed the new Optuna study.

Trials are expensive, so a new search should not relearn from nothing what earlier ones
measured. The earlier trials are read back from MLflow (their knobs are run parameters by
config path, their full configuration the ``raydistill.config`` tag), rebuilt as finished
Optuna trials of the new space and added to its study before the first suggestion: TPE's
start-up trials are then the earlier ones instead of random samples. They are not copied into
the new search's MLflow runs; the new search run records which searches it started from.

A trial is used only if its scores mean the same thing in the new search: the same corpus
and teacher (checked per earlier search, a mismatch is refused) and a configuration the new
space gives for the same knob values (same base, each knob within the new ranges), otherwise
it is left out and counted.
"""

from __future__ import annotations

import json
from typing import Optional

from raydistill.errors import UserError
from raydistill.search.objectives import objective_values
from raydistill.search.space import SearchSpace
from raydistill.tracking.mlflow import CONFIG, KIND, SEARCH_ID, find_run, trial_runs
from raydistill.utils import log


def parse_ids(text: str, name_pattern) -> list[str]:
    ids = [part.strip() for part in text.split(",") if part.strip()]
    if not ids:
        raise UserError("--warm-start needs one or more search ids (comma-separated)")
    for search_id in ids:
        if not name_pattern.fullmatch(search_id):
            raise UserError(f"--warm-start: {search_id!r} is not a search id")
    return ids


def earlier_searches(client, experiment_id: str, experiment: str, ids: list[str]) -> dict:
    """{search id: its search run}, or a UserError naming the one this experiment lacks."""
    found = {}
    for search_id in ids:
        run = find_run(client, experiment_id, {KIND: "search", SEARCH_ID: search_id})
        if run is None:
            raise UserError(f"--warm-start: no search {search_id!r} in experiment {experiment!r}")
        found[search_id] = run
    return found


def check_same_data(searches: dict, corpus_key: str, teacher_key: str) -> None:
    """A UserError unless every earlier search ran on this corpus and teacher."""
    for search_id, run in searches.items():
        params = run.data.params
        for what, mine in (("corpus", corpus_key), ("teacher", teacher_key)):
            theirs = params.get(f"{what}_key")
            if theirs != mine:
                raise UserError(f"--warm-start: search {search_id} ran on another {what} ({what} hash {theirs}, "
                                f"this search's is {mine}); its scores do not transfer")


def warm_trials(client, experiment_id: str, searches: dict, space: SearchSpace, objectives: dict) -> list:
    """The earlier searches' scored trials as finished Optuna trials of ``space``."""
    import optuna

    runs = [run for search_id in searches for run in trial_runs(client, experiment_id, search_id)]
    trials, unscored, misfit = [], 0, 0
    for run in runs:
        values = objective_values(run.data.metrics, objectives)
        if values is None:
            unscored += 1
            continue
        chosen = space.optuna_values(run.data.params)
        if chosen is None or not _same_config(space, chosen, run.data.tags.get(CONFIG)):
            misfit += 1
            continue
        trials.append(optuna.trial.create_trial(
            params=chosen, distributions=space.distributions(chosen),
            **({"values": values} if len(values) > 1 else {"value": values[0]}),
            user_attrs={"warm_start_run_id": run.info.run_id, "search_id": run.data.tags.get(SEARCH_ID)}))
    log(f"warm start: {len(trials)} scored trial(s) of {', '.join(searches)}"
        + (f"; left out {misfit} whose configuration this space does not give" if misfit else "")
        + (f", {unscored} without a score" if unscored else ""))
    if not trials:
        raise UserError(f"--warm-start: none of the {len(runs)} trial(s) of {', '.join(searches)} is scored and fits "
                        f"this search space ({misfit} do not fit, {unscored} have no score)")
    return trials


def _same_config(space: SearchSpace, chosen: dict, logged: Optional[str]) -> bool:
    """Whether the new space gives the earlier trial's full configuration for its knob values
    (runs without the configuration tag are compared by their knobs only)."""
    if not logged:
        return True
    return space.config(chosen).to_dict() == json.loads(logged)

"""``raydistill train --config FILE``: one configuration, one Ray Train run, one MLflow run.

Reruns what ``raydistill export`` wrote (or any hand-written file of the same format)::

    corpus: embedded          # or a corpus directory
    teacher: embedded         # or raydistill:/torchaudio:/hf: spec
    train: {...}              # a TrainConfig (method, student, targets, mask, optim, ...)
    provenance: {...}         # optional (export writes it): corpus_key and teacher_key are checked

A file whose provenance names another corpus or teacher than the ones it would now run on is
refused (``--allow-mismatch`` trains anyway): its scores would not be comparable.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from raydistill import provenance
from raydistill.commands.run import Inputs, RunOptions, open_run
from raydistill.config import TrainConfig
from raydistill.errors import RunFailed, UserError
from raydistill.methods import student_model, teacher_needs
from raydistill.models.checkpoint import STUDENT_FILE
from raydistill.models.macs import count_params
from raydistill.prepare import masks_teacher_input
from raydistill.search.trial import make_trainer
from raydistill.tracking.mlflow import KIND, log_dict_artifact, log_metrics, numeric
from raydistill.utils import log, one_line, read_yaml_mapping, stable_hash

CONFIG_KEYS = {"corpus", "teacher", "smoke", "train", "scores", "ranked_by", "source", "provenance"}


@dataclass(kw_only=True)
class TrainOptions(RunOptions):
    """``raydistill train``'s options (the shared ones: :class:`~raydistill.commands.run.RunOptions`;
    corpus, teacher and smoke default to what the file says, resources to one worker of one CPU)."""

    config: Path
    teacher: Optional[str] = None  # default: what the file says
    smoke: Optional[bool] = None  # default: what the file says
    allow_mismatch: bool = False  # train even if the file's provenance names another corpus or teacher

    def validate(self) -> tuple[dict, TrainConfig, Inputs]:
        """Every check of the options and of the files they name, writing nothing and starting
        nothing: (config file, its TrainConfig, the corpus and teacher checked), for the run to reuse."""
        self.check_run()
        doc = read_config_file(self.config)
        config = TrainConfig.from_dict(doc["train"], where=f"{self.config}: train")
        smoke = doc.get("smoke", False) if self.smoke is None else self.smoke
        if not isinstance(smoke, bool):
            raise UserError(f"{self.config}: smoke must be true or false, found {smoke!r}")
        inputs = self.check_inputs(self.corpus or doc.get("corpus"), self.teacher or doc.get("teacher", "embedded"),
                                   smoke=smoke, needs=lambda info: teacher_needs(config, info),
                                   masked=masks_teacher_input(config),
                                   what=f"config {self.config} (armhubert with arm.masking)")
        self.check_services()
        return doc, config, inputs


def read_config_file(path: Path) -> dict:
    shape = "a mapping with a 'train' section (as written by raydistill export)"
    doc = read_yaml_mapping(path, "config file", CONFIG_KEYS, shape=shape)
    if "train" not in doc:
        raise UserError(f"{path}: expected {shape}")
    return doc


def check_provenance(doc: dict, path: Path, corpus_key: str, teacher_key: str, *, allow: bool) -> None:
    """A UserError if the file's provenance records another corpus or teacher than these
    (unless ``allow``: then a warning). Files without provenance are not checked."""
    prov = doc.get("provenance") or {}
    for what, mine in (("corpus", corpus_key), ("teacher", teacher_key)):
        theirs = prov.get(f"{what}_key")
        if theirs and theirs != mine:
            message = (f"{path} was trained on {what} {theirs}, but this run's {what} is {mine}: "
                       f"its scores are not comparable")
            if not allow:
                raise UserError(message + " (pass --allow-mismatch to train anyway)")
            log(f"warning: {message} (--allow-mismatch)")


def run_train(opts: TrainOptions) -> dict:
    started = time.monotonic()
    doc, config, inputs = opts.validate()  # nothing written before
    ctx = open_run(opts, inputs)
    client, exp, corpus, teacher = ctx.client, ctx.experiment, ctx.corpus, ctx.teacher
    check_provenance(doc, opts.config, corpus.key, teacher.key, allow=opts.allow_mismatch)
    info = ctx.info
    store = ctx.targets(teacher_needs(config, info))
    run_id_hash = stable_hash([config.to_dict(), corpus.key, teacher.key])
    budgets = ctx.budgets("full")
    baselines = ctx.baselines(budgets)
    setup = ctx.setup(f"train-{run_id_hash}", store, budgets,
                      references=baselines.references())  # superb_score's FBank (0) and teacher (1000)
    prov = provenance.record(corpus_key=corpus.key, teacher_key=teacher.key)
    run = client.create_run(exp, run_name=f"train-{config.method}-{run_id_hash}",
                            tags={KIND: "train", "raydistill.config_file": str(opts.config), **provenance.as_tags(prov)})
    run_id = run.info.run_id
    client.log_metric(run_id, "params", count_params(student_model(config, info)), step=0)
    log_dict_artifact(client, run_id, {k: v for k, v in doc.items() if k != "train"} | {"train": config.to_dict()},
                      "config.yaml")
    log(f"training {config.method} ({config.optim.max_steps} steps) on Ray Train, MLflow run {run_id}")
    try:
        result = make_trainer(setup, config, f"train-{run_id_hash}-{int(time.time())}").fit()
    except Exception as e:  # Ray's TrainingFailedError: the worker's own error is its message's last line
        lines = [line for line in str(e).splitlines() if line.strip()]
        reason = lines[-1] if lines else type(e).__name__
        client.set_tag(run_id, "raydistill.error", reason[:4000])
        client.set_terminated(run_id, status="FAILED")
        raise RunFailed(f"training failed: {one_line(reason)} (MLflow run {run_id})") from e
    metrics = numeric(result.metrics or {})
    log_metrics(client, run_id, metrics, step=config.optim.max_steps)
    if result.checkpoint is not None:
        with result.checkpoint.as_directory() as d:
            client.log_artifact(run_id, str(Path(d) / STUDENT_FILE), artifact_path="student")
    client.set_terminated(run_id)
    summary = {"run_id": run_id, "mlflow_uri": ctx.uri, "wall_seconds": round(time.monotonic() - started, 1), **metrics}
    summary["random_init_overall_score"] = baselines.log("random_init", student=config.to_dict())["overall_score"]
    return summary

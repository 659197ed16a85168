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

from raydistill.config import TrainConfig
from raydistill.errors import RunFailed, UserError
from raydistill.models.checkpoint import STUDENT_FILE
from raydistill.methods import TeacherInfo, student_model, teacher_needs
from raydistill.models.macs import count_params
from raydistill.prepare import (Workdir, check_corpus, check_teacher, default_device, ensure_targets,
                                masks_teacher_input, resolve_corpus, resolve_teacher)
from raydistill.utils import log, one_line, read_yaml_mapping, stable_hash

CONFIG_KEYS = {"corpus", "teacher", "smoke", "train", "scores", "ranked_by", "source", "provenance"}


@dataclass
class TrainOptions:
    config: Path
    workdir: Path = Path("runs")
    mlflow_uri: Optional[str] = None
    experiment: str = "raydistill"
    address: Optional[str] = None
    smoke: Optional[bool] = None  # default: what the file says
    corpus: Optional[str] = None  # default: what the file says
    teacher: Optional[str] = None
    workers: Optional[int] = None  # default 1
    cpus_per_worker: Optional[float] = None  # default 1
    gpus_per_worker: Optional[float] = None
    seed: int = 0
    allow_mismatch: bool = False  # train even if the file's provenance names another corpus or teacher

    def __post_init__(self):
        self.workers = 1 if self.workers is None else self.workers
        self.cpus_per_worker = 1.0 if self.cpus_per_worker is None else self.cpus_per_worker

    def validate(self):
        """Every check of the options and of the files they name, writing nothing and starting
        nothing: (config file, its TrainConfig, smoke, corpus or None for the embedded one,
        teacher or None for the embedded one), for the run to reuse."""
        from raydistill.search.cluster import check_services
        from raydistill.search.run import check_run_options

        check_run_options(self)
        doc = read_config_file(self.config)
        config = TrainConfig.from_dict(doc["train"], where=f"{self.config}: train")
        smoke = doc.get("smoke", False) if self.smoke is None else self.smoke
        if not isinstance(smoke, bool):
            raise UserError(f"{self.config}: smoke must be true or false, found {smoke!r}")
        corpus = check_corpus(self.corpus or doc.get("corpus"))
        teacher = check_teacher(self.teacher or doc.get("teacher", "embedded"), smoke=smoke,
                                needs=lambda info: teacher_needs(config, info), masked=masks_teacher_input(config),
                                what=f"config {self.config} (armhubert with arm.masking)")
        check_services(self)
        return doc, config, smoke, corpus, teacher


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
    from raydistill.search.baselines import Baselines
    from raydistill.search.cluster import connect
    from raydistill.search.setup import make_setup
    from raydistill.search.trial import make_trainer
    from raydistill import provenance
    from raydistill.tracking.mlflow import KIND, client_for, experiment_id, log_dict_artifact, log_metrics, numeric

    started = time.monotonic()
    doc, config, smoke, checked_corpus, checked_teacher = opts.validate()  # nothing written before
    workdir = Workdir(opts.workdir).check_writable()
    uri = opts.mlflow_uri or workdir.mlflow_uri
    client = client_for(uri)
    exp = experiment_id(client, opts.experiment, None if opts.mlflow_uri else workdir.mlflow_artifacts)
    ray = connect(opts.address)
    device = default_device()
    corpus = resolve_corpus(opts.corpus or doc.get("corpus"), workdir, smoke=smoke, checked=checked_corpus)
    teacher = resolve_teacher(opts.teacher or doc.get("teacher", "embedded"), workdir, corpus, smoke=smoke,
                              device=device, checked=checked_teacher)
    check_provenance(doc, opts.config, corpus.key, teacher.key, allow=opts.allow_mismatch)
    info = TeacherInfo.of(teacher.describe())
    store = ensure_targets(teacher, corpus, workdir, teacher_needs(config, info), device=device, distributed=True)
    run_id_hash = stable_hash([config.to_dict(), corpus.key, teacher.key])
    budgets = {"probe": "smoke", "full": "smoke"} if smoke else {"probe": "probe", "full": "full"}
    baselines = Baselines(workdir, corpus, teacher, None, budgets["full"], device=device)
    setup = make_setup(opts, f"train-{run_id_hash}", corpus, store, teacher, budgets, workdir, ray,
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
    summary = {"run_id": run_id, "mlflow_uri": uri, "wall_seconds": round(time.monotonic() - started, 1), **metrics}
    summary["random_init_overall_score"] = baselines.log("random_init", student=config.to_dict())["overall_score"]
    return summary

"""Where a result came from: code version, library versions, and the data it was computed on.

Every MLflow run raydistill creates carries these as tags, and every exported configuration
carries them in its ``provenance`` section, so a result can be reproduced (or refused) months
later: ``raydistill train --config best.yaml`` compares the corpus and teacher hashes with the
ones it is about to use (docs/reading-a-search.md).
"""

from __future__ import annotations

import functools
import importlib.metadata
import subprocess
from pathlib import Path
from typing import Optional

LIBRARIES = ("torch", "torchaudio", "ray", "optuna", "mlflow")
PREFIX = "raydistill.provenance."
# MLflow's own system tags, shown in its run page (MlflowClient.create_run does not set them)
GIT_COMMIT_TAG = "mlflow.source.git.commit"


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


@functools.lru_cache(maxsize=1)
def code() -> dict:
    """raydistill's version, its git commit and whether the tree had uncommitted changes
    (``unknown`` outside a git checkout), and the versions of the libraries results depend on."""
    repo = Path(__file__).resolve().parents[1]
    commit, dirty = "unknown", "unknown"
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
        dirty = "true" if status.strip() else "false"
    except (OSError, subprocess.SubprocessError):
        pass
    return {"raydistill": _version("raydistill"), "git_commit": commit, "git_dirty": dirty,
            **{name: _version(name) for name in LIBRARIES}}


def record(*, corpus_key: str, teacher_key: str, search_id: Optional[str] = None) -> dict:
    """The provenance of a run: :func:`code` plus the corpus's and the teacher's identity hashes
    (``Corpus.key``, ``Teacher.key``) and the search it belongs to."""
    out = {**code(), "corpus_key": corpus_key, "teacher_key": teacher_key}
    if search_id:
        out["search_id"] = search_id
    return out


def as_tags(prov: dict) -> dict:
    """MLflow tags of a provenance record: ``raydistill.provenance.<field>``, plus MLflow's git tag."""
    tags = {PREFIX + k: str(v) for k, v in prov.items()}
    if prov.get("git_commit", "unknown") != "unknown":
        tags[GIT_COMMIT_TAG] = prov["git_commit"]
    return tags


def from_tags(tags: dict) -> dict:
    """The provenance record a run's tags carry (empty for runs logged before it existed)."""
    return {k[len(PREFIX):]: v for k, v in sorted(tags.items()) if k.startswith(PREFIX)}

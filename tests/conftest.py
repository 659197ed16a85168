"""Shared fixtures: one tiny real corpus and one Ray cluster per test session.

Ray takes 12-19 s to start on 2 cores, so every test that needs it shares one local
cluster; the CLI's `search`/`train` find it already initialised and join it.
"""

import dataclasses
import os

import pytest

os.environ.setdefault("RAY_DEDUP_LOGS", "1")


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """A real espeak-ng corpus, tiny: 6 seen + 2 unseen voices, 56 utterances."""
    from raydistill.corpus.synth import CorpusConfig, build_corpus

    config = dataclasses.replace(
        CorpusConfig.smoke(), name="espeak-tiny", num_seen_speakers=6, num_unseen_speakers=2,
        utts_per_seen_speaker=8, utts_per_unseen_speaker=4,
    )
    return build_corpus(config, tmp_path_factory.mktemp("corpus") / "tiny", progress=False)


@pytest.fixture(scope="session")
def _ray_session():
    import ray

    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def ray_cluster(_ray_session):
    """The session's local cluster, started on first use (and again after a test of
    test_cluster.py stopped it: two Ray clusters on one machine must never run at once)."""
    ray = _ray_session
    if not ray.is_initialized():
        ray.init(num_cpus=2, dashboard_host="127.0.0.1", include_dashboard=True)
    return ray


@pytest.fixture(scope="session")
def smoke_corpus(tmp_path_factory):
    """The --smoke corpus (184 utterances, 4 unseen speakers): every evaluation task has data."""
    from raydistill.corpus.synth import CorpusConfig, build_corpus

    return build_corpus(CorpusConfig.smoke(), tmp_path_factory.mktemp("corpus") / "smoke", progress=False)

"""Shared fixtures: one tiny real corpus and one Ray cluster per test session.

Ray takes 12-19 s to start on 2 cores, so every test that needs it shares one local
cluster; the CLI's `search`/`train` find it already initialised and join it.
"""

import dataclasses
import os
import re
import shutil

import pytest

os.environ.setdefault("RAY_DEDUP_LOGS", "1")


# A line Ray forwards to the driver's stderr from its own processes while the session's
# cluster is up, e.g. "\x1b[33m(raylet)\x1b[0m ... disk is over 95% full", "(raylet, ip=10.0.0.2) ..."
# or "(TrainTrainable pid=123, ip=...) ...".
RAY_FORWARDED = re.compile(r"^(\x1b\[[0-9;]*m)*\((raylet|gcs_server|autoscaler|[^()]*pid=\d+)[^()]*\)")


@pytest.fixture
def error_lines(capsys):
    """Read stderr since the last read and return raydistill's own non-empty lines: what
    Ray forwards from its processes (a raylet's disk warning, say) is not the CLI's output."""
    def read():
        return [line for line in capsys.readouterr().err.splitlines()
                if line.strip() and not RAY_FORWARDED.match(line)]
    return read


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


@pytest.fixture(scope="session")
def smoke_workdir(smoke_corpus, tmp_path_factory):
    """Seeds a workdir with what every ``--smoke`` command on the embedded corpus builds first:
    the smoke corpus (``smoke_corpus``, synthesised once a session) and the smoke teacher,
    pretrained on it once. ``smoke_workdir(dest)`` copies them to ``dest`` (a copy: the test may
    write there) and returns it. For tests of what runs on them, not of the building:
    test_e2e.py's search builds its own."""
    from raydistill.corpus.synth import CorpusConfig
    from raydistill.prepare import Workdir, embedded_corpus_dir, resolve_corpus, resolve_teacher

    template = Workdir(tmp_path_factory.mktemp("smoke-workdir") / "runs")
    shutil.copytree(smoke_corpus.root, embedded_corpus_dir(template, CorpusConfig.smoke()))
    corpus = resolve_corpus(None, template, smoke=True)
    assert corpus.key == smoke_corpus.key, "the workdir's smoke corpus is not the session's"
    resolve_teacher("embedded", template, corpus, smoke=True)

    def seed(dest):
        shutil.copytree(template.root, dest, symlinks=True)
        return dest
    return seed


@pytest.fixture(scope="session")
def librispeech_tree(tiny_corpus, tmp_path_factory):
    """A small LibriSpeech-layout tree of real (espeak-ng) speech: the tiny corpus's sentences
    as ``<subset>/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac`` with one ``trans.txt`` per
    chapter; train -> train-clean-100, dev -> dev-clean, test -> test-clean. Seen speakers
    appear in all three (SID), unseen ones in dev/test only (ASV), as in LibriSpeech."""
    import soundfile as sf

    root = tmp_path_factory.mktemp("LibriSpeech")
    subsets = {"train": "train-clean-100", "dev": "dev-clean", "test": "test-clean"}
    speakers = {s: str(100 + i) for i, s in enumerate(sorted({u.speaker for u in tiny_corpus.utterances}))}
    chapters: dict = {}
    for utt in tiny_corpus.utterances:
        if utt.kind not in ("sentence", "command") or not utt.text:
            continue
        spk = speakers[utt.speaker]
        chapter = f"{spk}0{list(subsets).index(utt.split)}"
        folder = root / subsets[utt.split] / spk / chapter
        folder.mkdir(parents=True, exist_ok=True)
        lines = chapters.setdefault(folder, [])
        utt_id = f"{spk}-{chapter}-{len(lines):04d}"
        sf.write(folder / f"{utt_id}.flac", tiny_corpus.load_audio(utt), 16000, subtype="PCM_16")
        lines.append(f"{utt_id} {utt.text.upper()}")
    for folder, lines in chapters.items():
        (folder / f"{folder.parent.name}-{folder.name}.trans.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="session")
def librispeech_corpus(librispeech_tree, tmp_path_factory):
    """The tree read by `raydistill corpus librispeech` (phones from espeak-ng G2P)."""
    from raydistill.corpus import read_librispeech

    return read_librispeech(librispeech_tree, tmp_path_factory.mktemp("ls-corpus") / "corpus", progress=False)


@pytest.fixture(scope="session")
def base_teachers(tmp_path_factory):
    """HuBERT-base-shaped teachers with random weights, as users bring them: torchaudio's
    ``hubert_pretrain_base`` (pre-training head, mask embedding) and ``hubert_base`` (encoder
    only) state dicts, and a Hugging Face ``HubertModel`` directory."""
    import torch
    import torchaudio

    d = tmp_path_factory.mktemp("base-teachers")
    torch.manual_seed(0)
    torch.save(torchaudio.models.hubert_pretrain_base().state_dict(), d / "hubert_pretrain_base.pt")
    torch.save(torchaudio.models.hubert_base().state_dict(), d / "hubert_base.pt")
    teachers = {"pretrain": d / "hubert_pretrain_base.pt", "base": d / "hubert_base.pt"}
    try:
        import transformers
    except ImportError:
        return teachers
    transformers.HubertModel(transformers.HubertConfig()).save_pretrained(d / "hf")
    return {**teachers, "hf": d / "hf"}

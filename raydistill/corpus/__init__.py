"""Speech corpora: the synthetic espeak-ng default and LibriSpeech-layout directories, in one format.

``manifest`` defines the on-disk format every later stage reads; ``synth`` builds the default
corpus (``text`` says what is spoken, ``voices`` who speaks); ``librispeech`` indexes real audio.
"""

from raydistill.corpus.librispeech import read_librispeech
from raydistill.corpus.manifest import Corpus, Utterance, load_audio, write_manifest
from raydistill.corpus.synth import CorpusConfig, build_corpus

__all__ = [
    "Corpus",
    "CorpusConfig",
    "Utterance",
    "build_corpus",
    "load_audio",
    "read_librispeech",
    "write_manifest",
]

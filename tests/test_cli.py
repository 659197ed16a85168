"""The command line as a user meets it: --help, and bad input refused in one line with exit code 2."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SPACE = str(REPO / "search_spaces" / "dice.yaml")


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "raydistill", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def test_help_lists_every_command():
    result = run("--help")
    assert result.returncode == 0
    for command in ("search", "train", "export", "evaluate", "corpus", "teacher"):
        assert command in result.stdout
    for command in ("search", "train", "export", "evaluate", "corpus synth", "teacher pretrain"):
        sub = run(*command.split(), "--help")
        assert sub.returncode == 0 and "usage: raydistill" in sub.stdout


def existing_search(tmp_path):
    (tmp_path / "w" / "ray_results" / "mine").mkdir(parents=True)
    return str(tmp_path / "w")


def bad_space(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("params:\n  optim.lr: {type: float, low: 0.1, high: 0.01}\n")
    return str(path)


def space_with_objectives(tmp_path, objectives: str):
    path = tmp_path / "objectives.yaml"
    path.write_text(Path(SPACE).read_text() + f"objectives: {objectives}\n")
    return str(path)


def space_with_reuse(tmp_path, pattern: str):
    path = tmp_path / "reuse.yaml"
    text = (REPO / "search_spaces" / "arm.yaml").read_text()
    path.write_text(text.replace("choices: [none, 2by2, 4by1]}", f"choices: [none, 2by2, 4by1, {pattern}]}}", 1))
    return str(path)


def wrong_shapes_teacher(tmp_path):
    import torch

    from raydistill.models.hubert import HubertConfig, HubertModel, hubert_conv

    path = tmp_path / "teacher.pt"  # a real HuBERT state dict, but 2 x 32 wide, named hubert-base
    small = HubertConfig(conv_layers=hubert_conv(16), embed_dim=32, num_layers=2, num_heads=2, ffn_dim=64,
                         pos_conv_kernel=8)
    torch.save(HubertModel(small).encoder.state_dict(), path)
    return f"torchaudio:{path}#hubert-base"


def corpus_options(tmp_path, text: str):
    path = tmp_path / "corpus.yaml"
    path.write_text(text)
    return str(path)


def a_file(tmp_path):
    path = tmp_path / "plain-file"
    path.write_text("x")
    return str(path)


CASES = [
    ("missing space", lambda t: ["search", "--space", str(t / "none.yaml"), "--workdir", str(t / "w")],
     "search space .*none.yaml does not exist"),
    ("inverted range", lambda t: ["search", "--space", bad_space(t), "--workdir", str(t / "w")],
     r"params.optim.lr: empty or inverted range \[0.1, 0.01\]"),
    ("zero trials", lambda t: ["search", "--space", SPACE, "--trials", "0", "--workdir", str(t / "w")],
     "--trials must be >= 1"),
    ("negative max failures", lambda t: ["search", "--space", SPACE, "--max-failures", "-1", "--workdir", str(t / "w")],
     "--max-failures must be >= 0"),
    ("workdir not writable", lambda t: ["search", "--space", SPACE, "--workdir", a_file(t) + "/sub"],
     "workdir .*plain-file/sub is not writable"),
    ("unreachable MLflow", lambda t: ["search", "--space", SPACE, "--workdir", str(t / "w"),
                                      "--mlflow-uri", "http://127.0.0.1:9/"],
     "cannot reach the MLflow tracking store at http://127.0.0.1:9/"),
    ("search name taken", lambda t: ["search", "--space", SPACE, "--workdir", existing_search(t), "--name", "mine"],
     "a search named 'mine' already exists"),
    ("nothing to resume", lambda t: ["search", "--space", SPACE, "--workdir", str(t / "w"), "--resume"],
     "--resume: no search to resume in"),
    ("unknown objective", lambda t: ["search", "--space", SPACE, "--workdir", str(t / "w"),
                                     "--objectives", "overall_score:max,flops:min"],
     "--objectives: unknown objective 'flops' \\(choose from overall_score, params, macs_per_second\\)"),
    ("objectives without overall_score", lambda t: ["search", "--space", SPACE, "--workdir", str(t / "w"),
                                                    "--objectives", "params:min"],
     "--objectives: the objectives must include overall_score"),
    ("bad objective mode", lambda t: ["search", "--space", SPACE, "--workdir", str(t / "w"),
                                      "--objectives", "overall_score:max,params:least"],
     "--objectives: objective params: mode must be max or min"),
    ("too many objectives in the space file",
     lambda t: ["search", "--space", space_with_objectives(
         t, "{overall_score: max, params: min, macs_per_second: min, pr_per: min}"), "--workdir", str(t / "w")],
     "objectives.yaml: objectives: 1 to 3 objectives, found 4"),
    ("export objectives without pareto", lambda t: ["export", "--workdir", str(t / "w"), "--out", str(t / "o"),
                                                    "--objectives", "overall_score:max,params:min"],
     "--objectives chooses what --pareto compares: pass --pareto with it"),
    ("missing train config", lambda t: ["train", "--config", str(t / "none.yaml"), "--workdir", str(t / "w")],
     "config file .*none.yaml does not exist"),
    ("train config without train section", lambda t: ["train", "--config", a_file(t), "--workdir", str(t / "w")],
     "expected a mapping with a 'train' section"),
    ("export without a store", lambda t: ["export", "--workdir", str(t / "w"), "--out", str(t / "o")],
     "no MLflow store at sqlite:///"),
    ("evaluate missing checkpoint", lambda t: ["evaluate", "--checkpoint", str(t / "none.pt")],
     "checkpoint .*none.pt does not exist"),
    ("evaluate a non-checkpoint", lambda t: ["evaluate", "--checkpoint", a_file(t)], "cannot read checkpoint"),
    ("librispeech missing root", lambda t: ["corpus", "librispeech", "--root", str(t / "none"), "--out", str(t / "o")],
     "none"),
    ("bad teacher spec", lambda t: ["teacher", "info", "wav2vec:/x"], "bad teacher 'wav2vec:/x'"),
    ("missing teacher file", lambda t: ["teacher", "info", f"torchaudio:{t / 'x.pt'}"], "teacher file .*x.pt does not exist"),
    ("unknown corpus option", lambda t: ["corpus", "synth", "--smoke", "--out", str(t / "c"), "--config",
                                         corpus_options(t, "reverb: speaker\nrooms: 3\n")],
     r"corpus.yaml: unknown corpus option\(s\) rooms \(allowed: .*reverb"),
    ("bad corpus option", lambda t: ["corpus", "synth", "--smoke", "--out", str(t / "c"), "--config",
                                     corpus_options(t, "reverb: cathedral\n")],
     "reverb must be one of off, speaker, utterance, found 'cathedral'"),
    ("wrongly typed corpus option", lambda t: ["corpus", "synth", "--smoke", "--out", str(t / "c"), "--config",
                                              corpus_options(t, "flite_frac: x\n")],
     "corpus.yaml.flite_frac: expected a number, found 'x'"),
    ("corpus config not a mapping", lambda t: ["corpus", "synth", "--out", str(t / "c"), "--config",
                                               corpus_options(t, "- reverb\n")], "expected a mapping of corpus options"),
    ("corpus dir that is not a corpus", lambda t: ["corpus", "info", str(t)], "no corpus at"),
    ("unreachable Ray address", lambda t: ["search", "--space", SPACE, "--workdir", str(t / "w"),
                                          "--address", "127.0.0.1:9"], "cannot connect to the Ray cluster at 127.0.0.1:9"),
    ("reuse pattern longer than the student", lambda t: ["search", "--space", space_with_reuse(t, "3by4"),
                                                        "--workdir", str(t / "w")],
     "reuse pattern 3by4 covers 12 layers but the student has 4"),
    ("missing corpus", lambda t: ["search", "--space", SPACE, "--workdir", str(t / "w"),
                                  "--corpus", str(t / "none")], "none is not a raydistill corpus"),
    ("teacher with wrong shapes", lambda t: ["teacher", "info", wrong_shapes_teacher(t)],
     "does not match the hubert-base layout"),
]


@pytest.mark.parametrize("name, args, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_2(tmp_path, name, args, message):
    import re

    result = run(*args(tmp_path))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("raydistill: error: "), result.stderr
    assert re.search(message, lines[0]), lines[0]
    assert "Traceback" not in result.stderr


def test_a_bad_flag_is_exit_2():
    result = run("search", "--trials", "many")
    assert result.returncode == 2 and "invalid int value" in result.stderr


def test_corpus_synth_with_options(tmp_path):
    """--config sets corpus options over the preset; corpus.json records them."""
    import json

    options = corpus_options(tmp_path, "num_seen_speakers: 2\nnum_unseen_speakers: 0\nutts_per_seen_speaker: 4\n"
                                       "reverb: speaker\nt60: [0.1, 0.2]\n")
    result = run("corpus", "synth", "--smoke", "--config", options, "--out", str(tmp_path / "c"))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["utterances"] == 8
    config = json.loads((tmp_path / "c" / "corpus.json").read_text())["config"]
    assert (config["name"], config["reverb"], config["t60"]) == ("espeak-smoke", "speaker", [0.1, 0.2])

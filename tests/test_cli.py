"""The command line as a user meets it: --help, and bad input refused in one line with exit code 2."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SPACE = str(REPO / "search_spaces" / "dice.yaml")


ARM_SPACE = str(REPO / "search_spaces" / "arm.yaml")
PLAN = str(REPO / "studies" / "papers.yaml")


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "raydistill", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


# The CLI with a tripwire on the long work: bad input must be refused before any of it, so a
# check that goes missing fails the test (exit 3) instead of starting Ray or synthesising speech.
GUARD = """
import sys
def tripwire(what):
    def stop(*args, **kwargs):
        print(f"tripwire: {what} started", file=sys.stderr)
        sys.exit(3)
    return stop
import ray
ray.init = tripwire("Ray")
import raydistill.corpus.synth, raydistill.train.pretrain
raydistill.corpus.synth.build_corpus = tripwire("corpus synthesis")
raydistill.train.pretrain.pretrain_teacher = tripwire("teacher pretraining")
from raydistill.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run_guarded(*args):
    return subprocess.run([sys.executable, "-c", GUARD, *args], capture_output=True, text=True, timeout=120)


class Tripwire(BaseException):
    """Long work started in-process (a BaseException: no ``except Exception`` swallows it)."""


@pytest.fixture
def run_in_process(monkeypatch, capsys):
    """GUARD's CLI in this process (no interpreter and torch import per case): the same
    tripwires, exit code 3 if one is hit; the session's Ray cluster, if up, is hidden so a
    missing check cannot join it unseen. Returns what ``run_guarded`` returns."""
    import ray

    import raydistill.corpus
    import raydistill.corpus.synth
    import raydistill.train.pretrain
    from raydistill.cli import main

    def tripwire(what):
        def stop(*args, **kwargs):
            raise Tripwire(what)
        return stop

    monkeypatch.setattr(ray, "init", tripwire("Ray"))
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(raydistill.corpus.synth, "build_corpus", tripwire("corpus synthesis"))
    monkeypatch.setattr(raydistill.corpus, "build_corpus", tripwire("corpus synthesis"))
    monkeypatch.setattr(raydistill.train.pretrain, "pretrain_teacher", tripwire("teacher pretraining"))

    def run(*args):
        capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse
            code = e.code
        except Tripwire as e:
            print(f"tripwire: {e} started", file=sys.stderr)
            code = 3
        out = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), code, out.out, out.err)
    return run


def test_help_lists_every_command():
    result = run("--help")
    assert result.returncode == 0
    for command in ("search", "train", "export", "evaluate", "corpus", "teacher", "doctor"):
        assert command in result.stdout
    for command in ("search", "train", "export", "evaluate", "corpus synth", "teacher pretrain", "doctor"):
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

    from raydistill.models.config import HubertConfig, hubert_conv
    from raydistill.models.hubert import HubertModel

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


def binary_file(tmp_path, name="binary.yaml"):
    path = tmp_path / name
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    return str(path)


def empty_file(tmp_path, name="empty.pt"):
    path = tmp_path / name
    path.write_bytes(b"")
    return str(path)


class RunsCode:
    """Unpickling it would create the directory ``marker``: a pickle with code in it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.mkdir, (str(self.marker),)


def pickle_with_code(tmp_path):
    import torch

    path = tmp_path / "code.pt"
    torch.save(RunsCode(tmp_path / "code-ran"), path)
    return str(path)


def not_a_corpus(tmp_path):
    (tmp_path / "not-a-corpus").mkdir()
    return str(tmp_path / "not-a-corpus")


def corpus_with_manifest(tmp_path, manifest: bytes, info: bytes = b""):
    root = tmp_path / "corpus"
    root.mkdir()
    (root / "manifest.jsonl").write_bytes(manifest)
    if info:
        (root / "corpus.json").write_bytes(info)
    return str(root)


def a_manifest_line():
    import json

    return (json.dumps({"id": "a", "audio": "a.wav", "speaker": "s", "split": "train", "num_samples": 16000})
            + "\n").encode()


def tiny_encoder_teacher(tmp_path, mask_emb_width=None):
    """The embedded teacher's shape (192 wide) in torchaudio's encoder layout: no mask
    embedding, unless one of ``mask_emb_width`` is given from a file."""
    import torch

    from raydistill.models.config import ARCHITECTURES
    from raydistill.models.hubert import HubertModel

    path = tmp_path / "encoder.pt"
    torch.save(HubertModel(ARCHITECTURES["tiny-teacher"]).encoder.state_dict(), path)
    spec = f"torchaudio:{path}#tiny-teacher"
    if mask_emb_width is not None:
        torch.save(torch.zeros(mask_emb_width), tmp_path / "emb.pt")
        spec += f"?mask_emb={tmp_path / 'emb.pt'}"
    return spec


def arm_config(tmp_path, **top):
    import yaml

    path = tmp_path / "arm-config.yaml"
    path.write_text(yaml.safe_dump({**top, "train": {"method": "armhubert", "arm": {"masking": True},
                                                      "student": {"preset": "tiny-teacher", "embed_dim": 96}}}))
    return str(path)


def student_checkpoint(tmp_path):
    from raydistill.config import TrainConfig
    from raydistill.methods import get_method
    from raydistill.teacher.info import TeacherInfo
    from raydistill.models.checkpoint import save_student

    config = TrainConfig.from_dict({"method": "star", "student": {"preset": "tiny-teacher", "num_layers": 2}})
    path = tmp_path / "student.pt"
    save_student(path, config, get_method("star").build(config, TeacherInfo(4, 192)),
                 {"spec": "embedded", "num_layers": 4, "embed_dim": 192}, masks_input=False)
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
    # search: every flag, before anything is written or started
    ("zero max concurrent", lambda t: ["search", "--space", SPACE, "--workdir", str(t / "w"), "--max-concurrent", "0"],
     "--max-concurrent must be >= 1, found 0"),
    ("zero workers", lambda t: ["search", "--space", SPACE, "--workdir", str(t / "w"), "--workers", "0"],
     "--workers must be >= 1, found 0"),
    ("negative gpus", lambda t: ["search", "--space", SPACE, "--workdir", str(t / "w"), "--gpus-per-worker", "-1"],
     "--gpus-per-worker must be 0, a fraction of one GPU, or a whole number, found -1"),
    ("fractional gpus above one", lambda t: ["search", "--space", SPACE, "--workdir", str(t / "w"),
                                             "--gpus-per-worker", "1.5"], "--gpus-per-worker must be 0, a fraction"),
    ("DDP ranks sharing a GPU", lambda t: ["search", "--space", SPACE, "--workdir", str(t / "w"), "--workers", "2",
                                           "--gpus-per-worker", "0.5"],
     "--workers 2 with --gpus-per-worker 0.5: DDP's ranks need a whole GPU each"),
    ("negative cpus", lambda t: ["search", "--space", SPACE, "--workdir", str(t / "w"), "--cpus-per-worker", "-1"],
     "--cpus-per-worker must be a number > 0, found -1"),
    ("zero cpus", lambda t: ["search", "--space", SPACE, "--workdir", str(t / "w"), "--cpus-per-worker", "0"],
     "--cpus-per-worker must be a number > 0, found 0"),
    ("nan cpus", lambda t: ["search", "--space", SPACE, "--workdir", str(t / "w"), "--cpus-per-worker", "nan"],
     "--cpus-per-worker must be a number > 0, found nan"),
    ("more CPUs than the machine", lambda t: ["search", "--space", SPACE, "--workdir", str(t / "w"),
                                              "--workers", "100000"], "needs more CPUs than this machine has"),
    ("more GPUs than the machine", lambda t: ["search", "--space", SPACE, "--workdir", str(t / "w"),
                                              "--workers", "1000", "--cpus-per-worker", "0.001",
                                              "--gpus-per-worker", "1"], "needs more GPUs than this machine has"),
    ("zero grace period", lambda t: ["search", "--space", SPACE, "--workdir", str(t / "w"), "--grace-period", "0"],
     "--grace-period must be >= 1, found 0"),
    ("reduction factor 1", lambda t: ["search", "--space", SPACE, "--workdir", str(t / "w"),
                                      "--reduction-factor", "1"], "--reduction-factor must be >= 2, found 1"),
    ("negative seed", lambda t: ["search", "--space", SPACE, "--workdir", str(t / "w"), "--seed", "-1"],
     "--seed must be between 0 and 2147483647, found -1"),
    ("binary space file", lambda t: ["search", "--space", binary_file(t), "--workdir", str(t / "w")],
     "search space .*binary.yaml is not a text file"),
    ("space that is a directory", lambda t: ["search", "--space", str(t), "--workdir", str(t / "w")],
     "search space .* is a directory, not a YAML file"),
    ("empty experiment", lambda t: ["search", "--space", SPACE, "--workdir", str(t / "w"), "--experiment", ""],
     "--experiment must not be empty"),
    ("workdir that is a file", lambda t: ["search", "--space", SPACE, "--workdir", a_file(t)],
     "workdir .*plain-file is a file, not a directory"),
    ("corpus dir without a manifest", lambda t: ["search", "--space", SPACE, "--workdir", str(t / "w"),
                                                 "--corpus", not_a_corpus(t)], "not-a-corpus is not a raydistill corpus"),
    ("corpus without train utterances", lambda t: ["search", "--space", SPACE, "--workdir", str(t / "w"), "--corpus",
                                                   corpus_with_manifest(t, a_manifest_line().replace(b"train", b"test"))],
     "corpus .*corpus has no train utterances"),
    ("search missing teacher file", lambda t: ["search", "--space", SPACE, "--workdir", str(t / "w"),
                                               "--teacher", f"torchaudio:{t / 'none.pt'}"],
     "teacher file .*none.pt does not exist"),
    ("teacher without a head for kd", lambda t: ["search", "--space", str(REPO / "search_spaces" / "kd.yaml"),
                                                 "--workdir", str(t / "w"), "--teacher", tiny_encoder_teacher(t)],
     "has no pre-training head"),
    ("masking distillation with an untrained mask embedding",
     lambda t: ["search", "--space", ARM_SPACE, "--workdir", str(t / "w"), "--teacher", tiny_encoder_teacher(t)],
     "encoder.pt#tiny-teacher has no trained mask embedding, but search space .*arm.yaml .* runs it on masked "
     "input .*hubert_pretrain_\\* state dict.*masked_spec_embed.*\\?mask_emb=FILE"),
    ("mask embedding of the wrong width",
     lambda t: ["search", "--space", ARM_SPACE, "--workdir", str(t / "w"), "--teacher",
                tiny_encoder_teacher(t, mask_emb_width=768)],
     r"mask embedding file .*emb.pt: expected a float tensor of shape \[192\]"),
    ("unknown teacher option", lambda t: ["search", "--space", SPACE, "--workdir", str(t / "w"),
                                          "--teacher", f"torchaudio:{t / 'x.pt'}?emb=1"],
     "the options after '\\?' are mask_emb=FILE and head=FILE"),
    ("name with a slash", lambda t: ["search", "--space", SPACE, "--workdir", str(t / "w"), "--name", "a/b"],
     "--name 'a/b': a search id is letters, digits"),
    ("garbage address", lambda t: ["search", "--space", SPACE, "--workdir", str(t / "w"), "--address", "garbage"],
     "--address 'garbage': use auto, HOST:PORT"),
    ("dashboard address", lambda t: ["search", "--space", SPACE, "--workdir", str(t / "w"),
                                     "--address", "http://127.0.0.1:8265"], "--address 'http://127.0.0.1:8265'"),
    ("garbage MLflow scheme", lambda t: ["search", "--space", SPACE, "--workdir", str(t / "w"),
                                         "--mlflow-uri", "foo://bar"], "--mlflow-uri foo://bar: unknown scheme 'foo'"),
    ("MLflow file store", lambda t: ["search", "--space", SPACE, "--workdir", str(t / "w"),
                                     "--mlflow-uri", str(t / "mlruns")], "MLflow's file store takes no new runs"),
    ("MLflow store that is not SQLite", lambda t: ["search", "--space", SPACE, "--workdir", str(t / "w"),
                                                   "--mlflow-uri", f"sqlite:///{a_file(t)}"],
     "plain-file is not a SQLite database"),
    # train: the same checks, through TrainOptions.validate
    ("train binary config", lambda t: ["train", "--config", binary_file(t), "--workdir", str(t / "w")],
     "config file .*binary.yaml is not a text file"),
    ("train zero workers", lambda t: ["train", "--config", arm_config(t), "--workdir", str(t / "w"), "--workers", "0"],
     "--workers must be >= 1, found 0"),
    ("train empty experiment", lambda t: ["train", "--config", arm_config(t), "--workdir", str(t / "w"),
                                          "--experiment", ""], "--experiment must not be empty"),
    ("train workdir that is a file", lambda t: ["train", "--config", arm_config(t), "--workdir", a_file(t)],
     "workdir .*plain-file is a file, not a directory"),
    ("train garbage MLflow scheme", lambda t: ["train", "--config", arm_config(t), "--workdir", str(t / "w"),
                                               "--mlflow-uri", "foo://bar"], "unknown scheme 'foo'"),
    ("train missing teacher file", lambda t: ["train", "--config", arm_config(t), "--workdir", str(t / "w"),
                                              "--teacher", f"torchaudio:{t / 'none.pt'}"], "teacher file .*none.pt does not exist"),
    ("train smoke that is not a bool", lambda t: ["train", "--config", arm_config(t, smoke="yes please"),
                                                  "--workdir", str(t / "w")], "smoke must be true or false"),
    ("train teacher that is not a spec", lambda t: ["train", "--config", arm_config(t, teacher=3),
                                                    "--workdir", str(t / "w")], "teacher must be a spec"),
    ("train masking distillation with an untrained mask embedding",
     lambda t: ["train", "--config", arm_config(t), "--workdir", str(t / "w"), "--teacher", tiny_encoder_teacher(t)],
     "has no trained mask embedding, but config .*arm-config.yaml .* runs it on masked input"),
    # evaluate, compare
    ("evaluate a zero-byte checkpoint", lambda t: ["evaluate", "--checkpoint", empty_file(t)],
     "checkpoint .*empty.pt is empty"),
    ("evaluate a pickle with code", lambda t: ["evaluate", "--checkpoint", pickle_with_code(t)],
     "checkpoint .*code.pt is not a raydistill checkpoint: it holds Python objects"),
    ("evaluate infinite lr scale", lambda t: ["evaluate", "--checkpoint", str(t / "none.pt"), "--lr-grid", "1,inf"],
     "--lr-grid must be positive finite numbers"),
    ("evaluate negative seed", lambda t: ["evaluate", "--checkpoint", str(t / "none.pt"), "--seed", "-3"],
     "--seed must be between 0"),
    ("evaluate workdir that is a file", lambda t: ["evaluate", "--checkpoint", student_checkpoint(t),
                                                   "--workdir", a_file(t)], "workdir .*plain-file is a file"),
    ("evaluate corpus that is not one", lambda t: ["evaluate", "--checkpoint", student_checkpoint(t),
                                                   "--corpus", not_a_corpus(t)], "is not a raydistill corpus"),
    ("compare repeated seeds", lambda t: ["compare", "--checkpoint", str(t / "none.pt"), "--seeds", "0,1,0"],
     "--seeds repeats a seed"),
    ("compare negative seed", lambda t: ["compare", "--checkpoint", str(t / "none.pt"), "--seeds", "0,-1"],
     "--seeds must be between 0"),
    ("compare missing teacher before the corpus", lambda t: ["compare", "--checkpoint", student_checkpoint(t),
                                                             "--workdir", str(t / "w"),
                                                             "--teacher", f"torchaudio:{t / 'none.pt'}"],
     "teacher file .*none.pt does not exist"),
    # export
    ("export zero top", lambda t: ["export", "--workdir", str(t / "w"), "--out", str(t / "o"), "--top", "0"],
     "--top must be >= 1, found 0"),
    ("export empty experiment", lambda t: ["export", "--workdir", str(t / "w"), "--out", str(t / "o"),
                                           "--experiment", ""], "--experiment must not be empty"),
    ("export out that is a file", lambda t: ["export", "--workdir", str(t / "w"), "--out", a_file(t)],
     "--out .*plain-file is a file, not a directory"),
    ("export garbage MLflow scheme", lambda t: ["export", "--mlflow-uri", "foo://bar", "--out", str(t / "o")],
     "unknown scheme 'foo'"),
    ("export missing SQLite store", lambda t: ["export", "--mlflow-uri", f"sqlite:///{t / 'no' / 'mlflow.db'}",
                                               "--out", str(t / "o")], "no MLflow store at sqlite:///.*does not exist"),
    # corpus, teacher, describe: every file they read
    ("corpus synth binary config", lambda t: ["corpus", "synth", "--smoke", "--out", str(t / "c"),
                                              "--config", binary_file(t)], "corpus config .*binary.yaml is not a text file"),
    ("corpus info binary manifest", lambda t: ["corpus", "info", corpus_with_manifest(t, b"\xff\xfe\x00")],
     "manifest.jsonl is not a text file"),
    ("corpus info bad corpus.json", lambda t: ["corpus", "info", corpus_with_manifest(t, a_manifest_line(), b"{bad")],
     "corpus.json: not a valid corpus description"),
    ("teacher info zero-byte file", lambda t: ["teacher", "info", f"torchaudio:{empty_file(t)}"],
     "teacher file .*empty.pt is empty"),
    ("teacher info pickle with code", lambda t: ["teacher", "info", f"torchaudio:{pickle_with_code(t)}"],
     "teacher file .*code.pt is not a torchaudio state dict: it holds Python objects"),
    ("teacher pretrain workdir that is a file", lambda t: ["teacher", "pretrain", "--workdir", a_file(t)],
     "workdir .*plain-file is a file"),
    ("teacher pretrain corpus that is not one", lambda t: ["teacher", "pretrain", "--workdir", str(t / "w"),
                                                           "--corpus", not_a_corpus(t)], "is not a raydistill corpus"),
    ("describe binary config", lambda t: ["describe", "--config", binary_file(t)],
     "config file .*binary.yaml is not a text file"),
    ("teacher info of the embedded teacher", lambda t: ["teacher", "info", "embedded"],
     "teacher info reads a teacher file"),
    ("convert out under a file", lambda t: ["convert", "--checkpoint", student_checkpoint(t), "--to", "s3prl",
                                            "--out", a_file(t) + "/sub"], "--out .*plain-file/sub is not writable"),
    ("corpus synth out under a file", lambda t: ["corpus", "synth", "--smoke", "--out", a_file(t) + "/sub"],
     "--out .*plain-file/sub is not writable: .*plain-file is a file"),
    # study, search --confirm
    ("search negative confirm", lambda t: ["search", "--space", SPACE, "--workdir", str(t / "w"), "--confirm", "-1"],
     "--confirm must be >= 0, found -1"),
    ("study binary plan", lambda t: ["study", "--plan", binary_file(t), "--workdir", str(t / "w")],
     "study plan .*binary.yaml is not a text file"),
    ("study unknown comparison", lambda t: ["study", "--plan", PLAN, "--only", "42", "--workdir", str(t / "w")],
     "--only '42': not a subset \\(cpu\\) or comparison id"),
    ("study zero concurrency", lambda t: ["study", "--plan", PLAN, "--max-concurrent", "0", "--workdir", str(t / "w")],
     "--max-concurrent must be >= 1"),
    ("study masking arms with an untrained mask embedding",
     lambda t: ["study", "--plan", PLAN, "--only", "5", "--workdir", str(t / "w"), "--teacher", tiny_encoder_teacher(t)],
     "has no trained mask embedding, but study plan .*papers.yaml .* runs it on masked input"),
    ("study table of a study never run", lambda t: ["study", "--plan", PLAN, "--table", "--workdir", str(t / "w")],
     "no MLflow store at sqlite:///"),
]


def check_refused(tmp_path, args, message, runner):
    import re

    argv = args(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    result = runner(*argv)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("raydistill: error: "), result.stderr
    assert re.search(message, lines[0]), lines[0]
    assert "Traceback" not in result.stderr
    assert sorted(tmp_path.rglob("*")) == before, "bad input left files behind"


@pytest.mark.parametrize("name, args, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_2(tmp_path, name, args, message, run_in_process):
    """Refused in one line, exit 2, before anything is built, started or written: no Ray, no
    corpus synthesis or teacher pretraining (tripwires), and no new file anywhere."""
    check_refused(tmp_path, args, message, run_in_process)


# one refusal per kind of check: the space file, the workdir, a services probe, the teacher, a
# non-search command's input
REAL_ENTRY_POINT = {"inverted range", "workdir not writable", "unreachable Ray address", "bad teacher spec",
                    "evaluate a pickle with code"}
ENTRY_POINT_CASES = [c for c in CASES if c[0] in REAL_ENTRY_POINT]


def test_the_real_entry_point_picks_its_cases():
    assert len(ENTRY_POINT_CASES) == len(REAL_ENTRY_POINT)


@pytest.mark.parametrize("name, args, message", ENTRY_POINT_CASES, ids=[c[0] for c in ENTRY_POINT_CASES])
def test_bad_input_through_the_real_entry_point(tmp_path, name, args, message):
    """A few of the cases above in a fresh interpreter (``python -c`` with GUARD's tripwires):
    the refusal reaches a user's terminal as it does in-process."""
    check_refused(tmp_path, args, message, run_guarded)


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


@pytest.fixture(scope="module")
def hubert_files(tmp_path_factory):
    """torchaudio's hubert_base (encoder layout: no mask embedding) and hubert_pretrain_base
    state dicts, random weights, plus a file holding a mask embedding for the first."""
    import torch
    import torchaudio

    d = tmp_path_factory.mktemp("hubert")
    torch.save(torchaudio.models.hubert_base().state_dict(), d / "base.pt")
    torch.save(torchaudio.models.hubert_pretrain_base().state_dict(), d / "pretrain.pt")
    torch.save({"mask_generator.mask_embedding": torch.randn(768)}, d / "emb.pt")
    return d


def test_teacher_info_says_whether_the_mask_embedding_is_trained(hubert_files):
    import json

    for spec, trained in ((f"torchaudio:{hubert_files / 'base.pt'}", False),
                          (f"torchaudio:{hubert_files / 'pretrain.pt'}", True),
                          (f"torchaudio:{hubert_files / 'base.pt'}?mask_emb={hubert_files / 'emb.pt'}", True)):
        result = run("teacher", "info", spec)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["mask_embedding"] is trained, spec


@pytest.mark.parametrize("command", ["search", "train"])
def test_masking_distillation_refuses_hubert_base_before_anything(tmp_path, hubert_files, command):
    """The README's own teacher (torchaudio's hubert_base) has no mask embedding: a search or a
    training run of masking distillation is refused in seconds, and the workdir stays empty."""
    import time

    workdir = tmp_path / "w"
    what = ["--space", ARM_SPACE] if command == "search" else ["--config", arm_config(tmp_path)]
    started = time.monotonic()
    result = run_guarded(command, *what, "--workdir", str(workdir), "--teacher", f"torchaudio:{hubert_files / 'base.pt'}")
    assert result.returncode == 2, result.stderr
    assert time.monotonic() - started < 60
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "base.pt has no trained mask embedding" in lines[0], result.stderr
    for works in ("hubert_pretrain_* state dict", "masked_spec_embed", "?mask_emb=FILE"):
        assert works in lines[0]
    assert not workdir.exists()  # no mlflow.db, no corpora, no caches


@pytest.mark.parametrize("teacher", ["pretrain.pt", "base.pt?mask_emb={d}/emb.pt"])
def test_masking_distillation_accepts_a_trained_mask_embedding(tmp_path, hubert_files, teacher):
    """A hubert_pretrain_* state dict, or hubert_base with an explicit embedding file, passes
    every check of a search (nothing written); the search reuses the teacher loaded to check it."""
    import torch

    from raydistill.commands.search import SearchOptions

    spec = f"torchaudio:{hubert_files / teacher.format(d=hubert_files)}"
    checked = SearchOptions(space=Path(ARM_SPACE), workdir=tmp_path / "w", teacher=spec).validate()
    assert checked.teacher.mask_embedding and checked.teacher.source == spec
    if "mask_emb" in teacher:
        expected = torch.load(hubert_files / "emb.pt")["mask_generator.mask_embedding"]
        torch.testing.assert_close(checked.teacher.model.mask_emb.data, expected, rtol=0, atol=0)
    assert not (tmp_path / "w").exists()


def test_masking_distillation_in_a_composed_space_is_checked(tmp_path):
    """all.yaml may run armhubert with masking: an encoder-layout teacher is refused for it too
    (with a head, so the kd check passes and the mask check is what speaks)."""
    from raydistill.errors import UserError
    from raydistill.commands.search import SearchOptions, masks_teacher
    from raydistill.search.space import load_space

    assert masks_teacher(load_space(REPO / "search_spaces" / "all.yaml"))
    assert masks_teacher(load_space(ARM_SPACE))
    assert not masks_teacher(load_space(SPACE))
    nomask = tmp_path / "arm-nomask.yaml"
    nomask.write_text(Path(ARM_SPACE).read_text().replace("arm: {masking: true", "arm: {masking: false", 1))
    assert not masks_teacher(load_space(nomask))
    chosen = tmp_path / "arm-choice.yaml"
    chosen.write_text(nomask.read_text() + "  arm.masking: {type: categorical, choices: [false, true]}\n")
    assert masks_teacher(load_space(chosen))
    with pytest.raises(UserError, match="no trained mask embedding"):
        SearchOptions(space=chosen, workdir=tmp_path / "w", teacher=tiny_encoder_teacher(tmp_path)).validate()
    SearchOptions(space=nomask, workdir=tmp_path / "w", teacher=tiny_encoder_teacher(tmp_path)).validate()
    assert not (tmp_path / "w").exists()

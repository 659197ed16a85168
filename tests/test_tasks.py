"""The SUPERB tasks beyond PR and SID: each metric against its definition computed
independently, the heads' semantics, and the whole suite on a real espeak-ng corpus."""

import itertools
import json

import numpy as np
import pytest
import torch
from torch import nn

from raydistill.cli import main
from raydistill.evaluate.probes import (
    ASRHead,
    CHARS,
    chars_to_words,
    text_to_chars,
    train_utterance_probe,
)
from raydistill.evaluate.qbe import average_precision, mean_average_precision, speech_span, subsequence_dtw
from raydistill.evaluate.speaker import equal_error_rate, trials
from raydistill.evaluate.suite import (
    OVERALL_SCORE_METRICS,
    EvalBudget,
    evaluate_upstream,
    overall_score,
    score_metrics,
    superb_score,
)
from raydistill.evaluate.upstream import FBankUpstream


# --- ASV ------------------------------------------------------------------------------------


def brute_force_eer(scores, same):
    """min over thresholds of max(FAR, FRR), the EER's upper bracket, from its definition."""
    scores, same = np.asarray(scores), np.asarray(same, bool)
    best = 1.0
    for t in np.concatenate([np.unique(scores), [np.inf]]):
        far = np.mean(scores[~same] >= t)
        frr = np.mean(scores[same] < t)
        best = min(best, max(far, frr))
    return 100 * best


def test_equal_error_rate_against_its_definition():
    rng = np.random.default_rng(0)
    for _ in range(20):
        same = rng.random(60) < 0.3
        same[:2] = [True, False]
        scores = rng.normal(size=60) + 1.5 * same
        eer = equal_error_rate(scores, same)
        upper = brute_force_eer(scores, same)
        # the interpolated crossing lies between the operating points that bracket it
        assert eer <= upper + 1e-9 and eer >= upper - 100 / min(same.sum(), (~same).sum())
    assert equal_error_rate([3, 2, 1, 0], [1, 1, 0, 0]) == 0.0
    assert equal_error_rate([0, 1, 2, 3], [1, 1, 0, 0]) == 100.0
    assert equal_error_rate([1, 1, 1, 1], [1, 0, 1, 0]) == 50.0  # all tied: no information
    with pytest.raises(ValueError):
        equal_error_rate([1, 2], [1, 1])


def test_trials_are_every_pair_once():
    i, j, same = trials(["a", "a", "b", "c", "b"])
    assert sorted(zip(i.tolist(), j.tolist())) == list(itertools.combinations(range(5), 2))
    assert same.sum() == 2  # (0, 1) and (2, 4)


# --- QbE ------------------------------------------------------------------------------------


def test_subsequence_dtw_against_explicit_recursion():
    rng = np.random.default_rng(1)
    cost = rng.random((5, 12))
    acc = np.full((5, 12), np.inf)
    acc[0] = cost[0]  # open begin
    for i in range(1, 5):
        for j in range(12):
            prev = [acc[i - 1, j]] + [acc[i - 1, j - k] for k in (1, 2) if j - k >= 0]
            acc[i, j] = cost[i, j] + min(prev)
    got = subsequence_dtw(torch.from_numpy(cost)).numpy()
    np.testing.assert_allclose(got, acc[-1] / 5, rtol=1e-12)


def test_average_precision_by_hand():
    # ranking: rel, non, rel, non -> precisions at the hits 1/1 and 2/3
    assert average_precision([0.9, 0.8, 0.7, 0.1], [1, 0, 1, 0]) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision([0.1, 0.9], [1, 0]) == pytest.approx(0.5)
    assert np.isnan(average_precision([1, 2], [0, 0]))


def test_qbe_finds_the_documents_that_contain_the_query():
    rng = np.random.default_rng(2)
    words = {w: rng.normal(size=(6, 8)).astype(np.float32) for w in ("yes", "no", "up")}
    filler = lambda n: rng.normal(size=(n, 8)).astype(np.float32)  # noqa: E731
    docs, doc_words = [], []
    for k in range(12):
        w = list(words)[k % 3]
        # the word, slowed down 1.5x, inside noise
        stretched = np.repeat(words[w], [1, 2] * 3, axis=0) + 0.1 * filler(9)
        docs.append(np.concatenate([filler(5 + k), stretched, filler(4)]))
        doc_words.append({w, "filler"})
    queries = [words[w] + 0.1 * filler(6) for w in words]
    assert mean_average_precision(queries, list(words), docs, doc_words) == pytest.approx(100.0)
    shuffled = [filler(6) for _ in words]  # unrelated queries: far from perfect
    assert mean_average_precision(shuffled, list(words), docs, doc_words) < 80.0


def test_speech_span_finds_the_word_in_a_clip():
    rng = np.random.default_rng(3)
    clip = 0.001 * rng.standard_normal(16000).astype(np.float32)
    clip[6400:9600] += 0.3 * np.sin(np.arange(3200) / 5.0)  # frames 20..30
    assert speech_span(clip) == (20, 30)


# --- ASR, IC --------------------------------------------------------------------------------


def test_text_to_chars_round_trip():
    ids = text_to_chars("turn on  the lights")
    assert min(ids) >= 1 and max(ids) <= len(CHARS)
    assert chars_to_words(ids) == ["turn", "on", "the", "lights"]


def test_asr_head_is_a_bidirectional_lstm_over_each_utterance():
    torch.manual_seed(0)
    head = ASRHead(num_states=2, dim=6, vocab=5, hidden=4)
    ref = nn.LSTM(4, 4, bidirectional=True, batch_first=True)
    with torch.no_grad():
        for name, p in head.forward_rnn.named_parameters():
            getattr(ref, name).copy_(p)
        for name, p in head.backward_rnn.named_parameters():
            getattr(ref, f"{name}_reverse").copy_(p)
    feats = [torch.randn(7, 2, 6), torch.randn(3, 2, 6)]
    got = head.utterances(feats)
    for f, g in zip(feats, got):
        x = head.projector(head.featurizer(f))
        h, _ = ref(x[None])  # one utterance alone: no padding anywhere
        torch.testing.assert_close(g, head.out(h[0]).log_softmax(-1))


def test_intent_is_right_only_when_every_slot_is():
    rng = np.random.default_rng(4)
    n = 120
    a = rng.integers(0, 3, n)  # slot 1: in the features
    b = rng.integers(0, 4, n)  # slot 2: pure noise
    x = np.eye(3)[a][:, None, :].astype(np.float32) + 0.05 * rng.normal(size=(n, 1, 3)).astype(np.float32)
    args = dict(steps=150, lr=0.05, eval_every=25)

    def probe(labels, slots):
        parts = [(x[lo:hi], labels[lo:hi]) for lo, hi in ((0, 80), (80, 100), (100, 120))]
        return train_utterance_probe(*parts, slots=slots, **args)

    one = probe(a, [3])
    both = probe(np.stack([a, b], 1), [3, 4])
    assert one["acc"] == 100.0
    assert both["acc"] < 60.0  # slot 2 is a guess: right about 1 in 4


# --- scores ---------------------------------------------------------------------------------


def test_superb_score_maps_fbank_to_0_and_the_reference_to_1000():
    fbank = {"pr_per": 80.0, "sid_acc": 10.0, "asv_eer": 30.0}
    ref = {"pr_per": 20.0, "sid_acc": 90.0, "asv_eer": 10.0}
    assert superb_score(fbank, fbank, ref) == 0.0
    assert superb_score(ref, fbank, ref) == 1000.0
    half = {"pr_per": 50.0, "sid_acc": 50.0, "asv_eer": 20.0}
    assert superb_score(half, fbank, ref) == pytest.approx(500.0)
    better = {"pr_per": 20.0, "sid_acc": 90.0, "asv_eer": 0.0}  # beyond the reference on ASV
    assert superb_score(better, fbank, ref) == pytest.approx(1000.0 * (1 + 1 + 1.5) / 3)
    tie = {**ref, "sid_acc": 10.0}  # no scale on SID: left out
    assert superb_score(half, fbank, tie) == pytest.approx(500.0)
    worse = {**ref, "asv_eer": 40.0}  # the reference loses to FBank on ASV: no scale either
    assert superb_score(half, fbank, worse) == pytest.approx(500.0)
    assert superb_score({**half, "asv_eer": 35.0}, fbank, worse) == pytest.approx(500.0)
    out = score_metrics({**half, "overall_score": 1.0, "extra": 2.0}, {"fbank": fbank, "teacher": ref})
    assert out["superb_score"] == pytest.approx(500.0) and "extra" not in out


# --- the suite on a real corpus -------------------------------------------------------------


@pytest.fixture(scope="module")
def fbank_scores(smoke_corpus):
    return evaluate_upstream(FBankUpstream(cmvn=False), smoke_corpus, EvalBudget.smoke(), seed=0)


def test_suite_runs_every_task_on_the_embedded_corpus(fbank_scores, smoke_corpus):
    s = fbank_scores
    assert set(OVERALL_SCORE_METRICS) <= set(s)
    assert s["overall_score"] == pytest.approx(overall_score(s))
    assert s["overall_score"] == pytest.approx(np.mean(
        [100 - s["pr_per"], 100 - s["asr_wer"], s["ks_acc"], s["qbe_map"], s["sid_acc"], 100 - s["asv_eer"],
         s["ic_acc"]]))
    assert s["ks_classes"] == 12 and s["ic_classes"] > 12  # the three slots' values
    # ASV scores unseen speakers only: none of its dev/test speakers is in SID's classes
    unseen = {u.speaker for u in smoke_corpus.utterances if u.speaker_pool == "unseen"}
    assert len(unseen) >= 4 and s["asv_dev_utts"] > 0 and s["qbe_dev_queries"] > 0
    for key in ("ks_acc", "ic_acc", "sid_acc", "qbe_map"):
        assert 0 <= s[key] <= 100
    assert 0 <= s["asv_eer"] <= 100 and s["asr_wer"] >= 0


def test_evaluate_cli_runs_the_chosen_tasks(smoke_corpus, tmp_path, capsys):
    from test_convert import student

    path, _ = student(tmp_path)
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(path), "--corpus", str(smoke_corpus.root), "--suite", "smoke",
                 "--tasks", "ks,ic"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"ks_acc", "ic_acc", "overall_score"} <= set(out) and "pr_per" not in out
    assert out["overall_score"] == pytest.approx((out["ks_acc"] + out["ic_acc"]) / 2)
    assert main(["evaluate", "--checkpoint", str(path), "--corpus", str(smoke_corpus.root), "--tasks", "pr,xx"]) == 2
    assert "unknown tasks" in capsys.readouterr().err


def test_compare_reports_seed_spread_and_the_order(smoke_corpus):
    from raydistill.evaluate.compare import compare_upstreams

    class Scaled(FBankUpstream):
        """FBank with its features multiplied: a different upstream, same information."""

        def __init__(self, name, noise):
            super().__init__(cmvn=False)
            self.name, self.noise = name, noise

        def hidden_states(self, wave, lengths):
            (x,), frames = super().hidden_states(wave, lengths)
            g = torch.Generator().manual_seed(0)
            return [x + self.noise * torch.randn(x.shape, generator=g)], frames

    budget = EvalBudget.smoke().with_tasks(["ks", "sid"])
    result = compare_upstreams([Scaled("clean", 0.0), Scaled("noisy", 30.0)], smoke_corpus, budget, [0, 1],
                               metric="overall_score", progress=False)
    clean, noisy = result["upstreams"]
    for entry in (clean, noisy):
        values = [s["overall_score"] for s in entry["scores"]]
        assert len(values) == 2
        assert entry["mean"]["overall_score"] == pytest.approx(np.mean(values))
        assert entry["spread"]["overall_score"] == pytest.approx(max(values) - min(values))
    (gap,) = result["claims"]  # by default each upstream is claimed to beat the next one
    assert gap["between"] == ["clean", "noisy"]
    assert gap["gap"] == pytest.approx(clean["mean"]["overall_score"] - noisy["mean"]["overall_score"])
    assert gap["spread"] == max(clean["spread"]["overall_score"], noisy["spread"]["overall_score"])
    assert result["holds"] == gap["holds"] == (gap["gap"] > gap["spread"]) and result["unjudged"] == []


def test_compare_judges_only_the_claims_it_is_given(monkeypatch):
    from raydistill.evaluate import compare

    class Fixed:
        def __init__(self, name, scores):
            self.name, self.values = name, iter(scores)

    upstreams = [Fixed("teacher", [50, 52]), Fixed("student", [45, 46]), Fixed("random_init", [20, 21]),
                 Fixed("fbank", [22, 19])]

    def fake_score(upstream, corpus, budget, seed, device, threads=0):
        return {"overall_score": float(next(upstream.values))}, 1.0

    monkeypatch.setattr(compare, "_score", fake_score)  # scores as given, seed by seed
    result = compare.compare_upstreams(
        upstreams, None, EvalBudget.smoke(), [0, 1], progress=False,
        claims=[("teacher", "student"), ("student", "random_init")],
        unjudged=[("student", "fbank"), ("random_init", "fbank")])
    assert [c["between"] for c in result["claims"]] == [["teacher", "student"], ["student", "random_init"]]
    assert [c["gap"] for c in result["claims"]] == [5.5, 25.0] and [c["spread"] for c in result["claims"]] == [2, 1]
    assert result["holds"] is True  # random init (20.5 ± 1) vs FBank (20.5 ± 3) does not enter the verdict
    assert [(g["between"], g["gap"], g["spread"]) for g in result["unjudged"]] == [
        (["student", "fbank"], 25.0, 3), (["random_init", "fbank"], 0.0, 3)]
    assert all("holds" not in g for g in result["unjudged"])
    with pytest.raises(ValueError, match="not scored"):
        compare.compare_upstreams(upstreams, None, EvalBudget.smoke(), [0], claims=[("teacher", "nobody")])


def test_learning_rate_is_tuned_on_dev(smoke_corpus):
    fbank = FBankUpstream(cmvn=False)
    budget = EvalBudget.smoke().with_tasks(["sid", "ks"])
    fixed = evaluate_upstream(fbank, smoke_corpus, budget, seed=0)
    tuned = evaluate_upstream(fbank, smoke_corpus, budget.with_lr_scales([1e-6, 1.0]), seed=0)
    for task in ("sid", "ks"):  # a 1e-6 × lr head cannot learn in 60 steps: dev picks the other
        assert tuned[f"{task}_lr"] == fixed[f"{task}_lr"] == budget.sid_lr
        assert tuned[f"{task}_acc"] == fixed[f"{task}_acc"]
    frozen = evaluate_upstream(fbank, smoke_corpus, budget.with_lr_scales([1e-6]), seed=0)
    assert frozen["sid_lr"] == pytest.approx(1e-6 * budget.sid_lr)
    assert frozen["sid_acc_dev"] <= fixed["sid_acc_dev"]
    with pytest.raises(Exception, match="lr_scales must be positive"):
        budget.with_lr_scales([0.0])


def test_compare_cli_prints_one_json_document(smoke_corpus, tmp_path, capsys):
    from test_convert import student

    path, _ = student(tmp_path)
    capsys.readouterr()
    assert main(["compare", "--checkpoint", str(path), "--teacher", f"raydistill:{path}", "--corpus",
                 str(smoke_corpus.root), "--suite", "smoke", "--tasks", "ks", "--seeds", "0,1", "--jobs", "2"]) == 0
    out = json.loads(capsys.readouterr().out)  # progress went to stderr
    assert [u["name"] for u in out["upstreams"]] == ["teacher", "student", "random_init", "fbank"]
    assert all(len(u["scores"]) == 2 for u in out["upstreams"])
    assert [c["between"] for c in out["claims"]] == [["teacher", "student"], ["student", "random_init"]]
    assert [g["between"] for g in out["unjudged"]] == [["student", "fbank"], ["random_init", "fbank"]]
    # the learning rate was tuned on dev by default (SUPERB's protocol): 3 scales per head
    assert out["lr_scales"] == [0.3, 1.0, 3.0] and out["jobs"] == 2
    # the "teacher" here is the student itself, scored in other processes: same scores, not strictly ordered
    teacher, same = out["upstreams"][:2]
    def scores(entry):
        return [{k: v for k, v in s.items() if k != "eval_seconds"} for s in entry["scores"]]

    assert scores(teacher) == scores(same) and out["holds"] is False
    assert main(["compare", "--checkpoint", str(path), "--seeds", "a,b"]) == 2
    assert main(["compare", "--checkpoint", str(path), "--jobs", "0"]) == 2

"""Student architectures of the distillation methods: attention-map reuse, explicit attention,
fairseq-style feature projection, the BiLSTM student, training heads and MAC counts."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
import torchaudio

from raydistill.models.heads import DistilHeads, LayerProjections, SplitLinear
from raydistill.models.config import HubertConfig, ARCHITECTURES, conv_frames, hubert_conv, parse_reuse_pattern
from raydistill.models.hubert import HubertModel
from raydistill.models.macs import count_params
from raydistill.models.student import MaskedPredictor, build_student
from raydistill.models.lstm import LstmConfig, LstmModel
from raydistill.models.macs import macs_per_second

T, F_ = True, False
TINY = HubertConfig(conv_layers=hubert_conv(32), embed_dim=64, num_layers=4, num_heads=4, ffn_dim=128,
                    pos_conv_kernel=16, layer_drop=0.0)
THIN = [(128, 10, 5), (256, 1, 1)] + [(256, 3, 2)] * 4 + [(480, 1, 1)] + [(480, 2, 2)] * 2


def tiny(**overrides) -> HubertConfig:
    return HubertConfig(**{**TINY.to_dict(), **overrides})


def padded_batch(*lengths: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    wave = torch.zeros(len(lengths), max(lengths))
    for i, n in enumerate(lengths):
        wave[i, :n] = torch.randn(n, generator=g)
    return wave, torch.tensor(lengths)


# --------------------------------------------------------------------------- reuse patterns
@pytest.mark.parametrize("spec, layers, expected", [
    ("none", 12, ()),
    (None, 4, ()),
    ([], 4, ()),
    ("2by6", 12, (T, F_) * 6),
    ("3by4", 12, (T, F_, F_) * 4),
    ("4by3", 12, (T, F_, F_, F_) * 3),
    ("1by4", 4, (T,) * 4),
    ([True, False, True, False], 4, (T, F_, T, F_)),
    ([1, 0, 0, 1], 4, (T, F_, F_, T)),
    (["T", "F", "t", "false"], 4, (T, F_, T, F_)),
])
def test_parse_reuse_pattern(spec, layers, expected):
    assert parse_reuse_pattern(spec, layers) == expected


@pytest.mark.parametrize("spec, layers, message", [
    ("3by4", 4, "reuse pattern 3by4 covers 12 layers but the student has 4"),
    ("2by6", 11, "covers 12 layers but the student has 11"),
    ("0by4", 4, "must be >= 1"),
    ("every-other", 12, "unknown reuse pattern"),
    ([True, False], 4, "2 entries but the student has 4 layers"),
    ([False, True], 2, "first layer must compute"),
    ([1, 2], 2, "true/false"),
    (3, 2, "a name"),
])
def test_parse_reuse_pattern_rejects(spec, layers, message):
    with pytest.raises(ValueError, match=message):
        parse_reuse_pattern(spec, layers)


def test_config_normalises_reuse_pattern_and_round_trips():
    cfg = tiny(reuse_pattern=[1, 0, "T", "F"])
    assert cfg.reuse_pattern == (T, F_, T, F_) and cfg.reuses_attention
    assert tiny(reuse_pattern="2by2") == cfg
    d = cfg.to_dict()
    assert d["reuse_pattern"] == [True, False, True, False]
    assert HubertConfig(**d) == cfg
    assert TINY.to_dict()["reuse_pattern"] == [] and TINY.computes_attention == (T,) * 4
    with pytest.raises(ValueError, match="covers 12 layers but the student has 4"):
        tiny(reuse_pattern="2by6")
    with pytest.raises(ValueError, match="reuse_mode"):
        tiny(reuse_mode="fairseq")


# --------------------------------------------------------------------------- reuse layers
def test_reusing_layers_have_no_query_key():
    plain, reuse = HubertModel(TINY), HubertModel(tiny(reuse_pattern="2by2"))
    d = TINY.embed_dim
    assert count_params(plain) - count_params(reuse) == 2 * 2 * (d * d + d)
    keys = set(reuse.state_dict())
    for i, computes in enumerate((T, F_, T, F_)):
        for proj in ("q_proj", "k_proj"):
            assert (f"encoder.encoder.transformer.layers.{i}.attention.{proj}.weight" in keys) == computes
        assert f"encoder.encoder.transformer.layers.{i}.attention.v_proj.weight" in keys


def test_no_reuse_keeps_torchaudio_state_dict_layout():
    ours = HubertModel(TINY).encoder.state_dict()
    theirs = torchaudio.models.wav2vec2_model(
        extractor_mode="group_norm", extractor_conv_layer_config=[list(c) for c in TINY.conv_layers],
        extractor_conv_bias=False, encoder_embed_dim=64, encoder_projection_dropout=0.1,
        encoder_pos_conv_kernel=16, encoder_pos_conv_groups=16, encoder_num_layers=4, encoder_num_heads=4,
        encoder_attention_dropout=0.1, encoder_ff_interm_features=128, encoder_ff_interm_dropout=0.0,
        encoder_dropout=0.1, encoder_layer_norm_first=False, encoder_layer_drop=0.0, aux_num_out=None,
    ).state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


def _head_probs(attention, x):
    """softmax(QKᵀ/√d_h) per head, [B, H, T, T], computed from the projections by hand."""
    b, t, _ = x.shape
    split = lambda y: y.view(b, t, attention.num_heads, attention.head_dim).transpose(1, 2)  # noqa: E731
    q, k = split(attention.q_proj(x)), split(attention.k_proj(x))
    return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(attention.head_dim), dim=-1)


def _reusing_layer_by_hand(layer, x, probs):
    """A post-LN layer whose attention uses the given per-head probabilities [B, H, T, T]."""
    b, t, d = x.shape
    att = layer.attention
    v = att.v_proj(x).view(b, t, att.num_heads, att.head_dim).transpose(1, 2)
    y = att.out_proj((probs @ v).transpose(1, 2).reshape(b, t, d))
    y = layer.layer_norm(x + y)
    ff = layer.feed_forward
    return layer.final_layer_norm(y + ff.output_dense(F.gelu(ff.intermediate_dense(y))))


def test_paper_reuse_uses_the_source_map_per_utterance_and_head():
    torch.manual_seed(0)
    model = HubertModel(tiny(reuse_pattern="2by2")).eval()
    wave = torch.randn(2, 6000)
    with torch.no_grad():
        out = model(wave, need_attention=True)
        layers = model.encoder.encoder.transformer.layers
        source = _head_probs(layers[0].attention, out.states[0])
        by_hand = _reusing_layer_by_hand(layers[1], out.states[1], source)
    assert len(out.attentions) == 4
    assert torch.equal(out.attentions[1], out.attentions[0])
    assert torch.equal(out.attentions[3], out.attentions[2])
    assert not torch.allclose(out.attentions[2], out.attentions[0])
    torch.testing.assert_close(out.attentions[0], source.mean(1), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.states[2], by_hand, atol=1e-5, rtol=1e-5)


def test_reference_code_reuse_applies_softmax_again():
    torch.manual_seed(0)
    paper = HubertModel(tiny(reuse_pattern="2by2")).eval()
    ref = HubertModel(tiny(reuse_pattern="2by2", reuse_mode="reference_code")).eval()
    ref.load_state_dict(paper.state_dict())
    wave = torch.randn(1, 6000)
    with torch.no_grad():
        out, base = ref(wave, need_attention=True), paper(wave, need_attention=True)
        layers = ref.encoder.encoder.transformer.layers
        source = _head_probs(layers[0].attention, out.states[0])
        by_hand = _reusing_layer_by_hand(layers[1], out.states[1], source.softmax(-1))
    torch.testing.assert_close(out.states[1], base.states[1])  # computing layers agree
    torch.testing.assert_close(out.attentions[1], source.softmax(-1).mean(1), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.states[2], by_hand, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out.states[2], base.states[2], atol=1e-3)
    # softmax of probabilities is close to uniform (docs/methods.md#reference-code-reuse, b)
    frames = out.attentions[1].shape[-1]
    entropy = -(out.attentions[1] * out.attentions[1].log()).sum(-1)
    assert (entropy > math.log(frames) - 0.05).all()


def test_reference_code_reuse_scrambles_heads_and_utterances():
    """fairseq's (H, B, T, T) viewed as (B·H, T, T): reusing slot b·H + h reads source (h', b')
    with h'·B + b' = b·H + h (docs/methods.md#reference-code-reuse, a)."""
    torch.manual_seed(0)
    cfg = tiny(reuse_pattern="2by2", reuse_mode="reference_code")
    model = HubertModel(cfg).eval()
    wave, lengths = padded_batch(6000, 4800, 5400)
    with torch.no_grad():
        out = model(wave, lengths, need_attention=True)
        attn = model.encoder.encoder.transformer.layers[0].attention
        mask = (-10000.0 * out.padding_mask[:, None, None, :]).float()
        b, t = wave.shape[0], out.states[0].shape[1]
        split = lambda y: y.view(b, t, attn.num_heads, attn.head_dim).transpose(1, 2)  # noqa: E731
        q, k = split(attn.q_proj(out.states[0])), split(attn.k_proj(out.states[0]))
        source = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(attn.head_dim) + mask, -1)
    heads = cfg.num_heads
    expected = torch.empty_like(source)
    for slot in range(b * heads):
        bb, hh = divmod(slot, heads)
        src_h, src_b = divmod(slot, b)
        logits = source[src_b, src_h].masked_fill(out.padding_mask[bb][None, :], float("-inf"))
        expected[bb, hh] = logits.softmax(-1)
    torch.testing.assert_close(out.attentions[1], expected.mean(1), atol=1e-6, rtol=1e-5)


# --------------------------------------------------------------------------- explicit attention
@pytest.mark.parametrize("overrides", [
    {},
    {"layer_norm_first": True, "extractor_mode": "layer_norm"},
])
def test_explicit_attention_equals_torchaudio(overrides):
    torch.manual_seed(0)
    model = HubertModel(tiny(**overrides)).eval()
    for wave, lengths in [padded_batch(7000, 5200, 6100), (torch.randn(2, 6000), None)]:
        with torch.no_grad():
            fused = model(wave, lengths)
            explicit = model(wave, lengths, need_attention=True)
        assert fused.attentions is None and len(explicit.attentions) == model.cfg.num_layers
        for a, b in zip(fused.states, explicit.states):
            assert (a - b).abs().max() < 1e-5
        for att in explicit.attentions:
            torch.testing.assert_close(att.sum(-1), torch.ones(att.shape[:2]))
            if explicit.padding_mask is not None:  # no weight on padded keys
                assert att.masked_select(explicit.padding_mask[:, None, :]).abs().max() < 1e-6


def test_explicit_attention_trains_like_torchaudio():
    """Training mode without dropout: same outputs and same gradients as the fused path."""
    torch.manual_seed(0)
    model = HubertModel(tiny(dropout=0.0, attention_dropout=0.0, dropout_input=0.0)).train()
    wave = torch.randn(2, 6000)
    grads = []
    for need in (False, True):
        model.zero_grad()
        out = model(wave, need_attention=need)
        out.states[-1].pow(2).mean().backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_layer_drop_with_reuse_keeps_one_state_per_layer():
    torch.manual_seed(3)
    model = HubertModel(tiny(reuse_pattern="2by2", layer_drop=0.5)).train()
    for _ in range(5):
        out = model(torch.randn(1, 4000), need_attention=True)
        assert len(out.states) == 5 and len(out.attentions) == 4
        assert out.attentions[0] is not None or out.attentions[1] is None  # no map to reuse: skipped


def test_layer_grad_scale():
    """Forward unchanged; backward: state i+1 carries a_i·(1-a_i), a_i = (L-i)/(L-i+1)
    (docs/methods.md#layer-gradient-scaling)."""
    torch.manual_seed(0)
    cfg = tiny(dropout=0.0, attention_dropout=0.0, dropout_input=0.0)
    plain, scaled = HubertModel(cfg).eval(), HubertModel(tiny(**{**cfg.to_dict(), "layer_grad_scale": True})).eval()
    scaled.load_state_dict(plain.state_dict())
    wave = torch.randn(1, 5000)
    layers = lambda m: m.encoder.encoder.transformer.layers  # noqa: E731
    for i in (0, 2, 3):
        a = (4 - i) / (4 - i + 1)
        grads = []
        for model in (plain, scaled):
            model.zero_grad()
            out = model(wave)
            out.states[i + 1].sum().backward()
            grads.append(layers(model)[i].final_layer_norm.weight.grad.clone())
        torch.testing.assert_close(grads[1], a * (1 - a) * grads[0], atol=1e-6, rtol=1e-4)
    with torch.no_grad():
        for x, y in zip(plain(wave).states, scaled(wave).states):
            torch.testing.assert_close(x, y)


# --------------------------------------------------------------------------- feature projection
def test_project_features_false_removes_the_projection():
    cfg = tiny(conv_layers=hubert_conv(64))
    fairseq = tiny(conv_layers=hubert_conv(64), project_features=False)
    with_proj, without = HubertModel(cfg), HubertModel(fairseq)
    d = cfg.embed_dim
    assert count_params(with_proj) - count_params(without) == d * d + d
    assert not any("feature_projection.projection" in k for k in without.state_dict())
    assert any("feature_projection.layer_norm" in k for k in without.state_dict())
    assert without(torch.randn(1, 4000)).states[0].shape[-1] == d
    with pytest.raises(ValueError, match=r"last channel count \(32\) to equal embed_dim \(64\)"):
        tiny(project_features=False)


# --------------------------------------------------------------------------- parameter counts
ARM = dict(conv_layers=THIN, embed_dim=480, num_layers=12, num_heads=12, project_features=False)


@pytest.mark.parametrize("ffn, reuse, d, reported, exact", [
    (864, "2by6", 480, 26.45e6, 26_448_448),  # ARMHuBERT
    (640, "none", 480, 26.64e6, 26_635_840),  # MaskHuBERT
    (816, "2by6", 432, 22.39e6, 22_394_080),  # ARMHuBERT-S
])
def test_recycle_and_distill_parameter_counts(ffn, reuse, d, reported, exact):
    conv = THIN[:-3] + [(d, 1, 1)] + [(d, 2, 2)] * 2
    model = HubertModel(HubertConfig(**{**ARM, "conv_layers": conv, "embed_dim": d, "ffn_dim": ffn,
                                        "reuse_pattern": reuse}))
    total = count_params(model) + count_params(LayerProjections(d, 768, 12))
    assert abs(total - reported) / reported < 0.005
    # docs/methods.md#ffn-reinvestment-and-sizes (fairseq counts: mask_emb, no post_extract_proj)
    assert total == exact


def test_presets_match_the_paper_configs():
    for name, exact in [("armhubert", 26_448_448), ("maskhubert", 26_635_840), ("armhubert-s", 22_394_080)]:
        cfg = ARCHITECTURES[name]
        assert count_params(HubertModel(cfg)) + count_params(LayerProjections(cfg.embed_dim, 768, 12)) == exact


def test_lstm_parameter_counts():
    # docs/methods.md#the-bilstm-student: CNN + LayerNorm 4,201,472 + LSTM 13,393,920 (+ mask_emb 512)
    model = LstmModel(LstmConfig())
    assert count_params(model.feature_extractor) + count_params(model.layer_norm) == 4_201_472
    assert count_params(model.lstms) == count_params(torch.nn.LSTM(512, 384, num_layers=4, bidirectional=True))
    assert count_params(model.lstms) == 13_393_920
    assert count_params(model) == 17_595_392 + 512
    # with a 512 -> 768 input projection: 18,775,808 (+ mask_emb 768)
    assert count_params(LstmModel(LstmConfig(input_proj=768))) == 18_775_808 + 768


# --------------------------------------------------------------------------- LSTM student
LSTM_TINY = LstmConfig(conv_layers=hubert_conv(32), hidden=24, num_layers=3)


def test_lstm_config():
    assert LSTM_TINY.embed_dim == 48 and LSTM_TINY.stride == 320 and LSTM_TINY.input_dim == 32
    assert LstmConfig(**LSTM_TINY.to_dict()) == LSTM_TINY
    with pytest.raises(ValueError, match="arch"):
        LstmConfig(arch="hubert")
    with pytest.raises(ValueError, match="dropout"):
        LstmConfig(dropout=1.0)


def test_lstm_states_and_padded_batch_equal_one_by_one():
    torch.manual_seed(0)
    model = LstmModel(LSTM_TINY).eval()
    wave, lengths = padded_batch(7000, 5200, 6400)
    with torch.no_grad():
        out = model(wave, lengths)
        alone = [model(wave[i : i + 1, : int(n)]) for i, n in enumerate(lengths)]
    # the 32-d LSTM input is not a hidden state: SUPERB's weighted sum needs one width
    assert model.num_states == len(out.states) == 3
    assert out.lengths.tolist() == [model.frames(int(n)) for n in lengths]
    assert [s.shape[-1] for s in out.states] == [48, 48, 48]
    projected = LstmModel(dataclasses.replace(LSTM_TINY, input_proj=48)).eval()
    with torch.no_grad():
        assert [s.shape[-1] for s in projected(wave, lengths).states] == [48] * 4 and projected.num_states == 4
    for i, single in enumerate(alone):
        n = int(out.lengths[i])
        for batched, one in zip(out.states, single.states):
            torch.testing.assert_close(batched[i, :n], one[0], atol=1e-5, rtol=1e-4)
            assert (batched[i, n:] == 0).all()
    with pytest.raises(ValueError, match="no attention"):
        model(wave, need_attention=True)


def test_lstm_masks_trains_and_predicts():
    torch.manual_seed(0)
    module = MaskedPredictor(LstmConfig(conv_layers=hubert_conv(32), hidden=16, num_layers=2, input_proj=32,
                                        dropout=0.1), num_classes=5, final_dim=8)
    assert isinstance(module.model, LstmModel)
    wave = torch.randn(2, 4000)
    frames = conv_frames(4000, module.model.cfg.conv_layers)
    mask = torch.zeros(2, frames, dtype=torch.bool)
    mask[:, 2:5] = True
    out = module(wave, mask, feature_grad_mult=0.1)
    assert torch.equal(out.states[0][mask], module.model.mask_emb.expand(int(mask.sum()), -1))
    logits = module.head(out.states[-1].reshape(-1, 32))
    (F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long)) + out.features_pen).backward()
    for name, p in module.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_build_student():
    assert type(build_student(TINY)) is HubertModel
    assert type(build_student(LSTM_TINY)) is LstmModel
    with pytest.raises(TypeError):
        build_student({"arch": "lstm"})


# --------------------------------------------------------------------------- heads
def test_layer_projections():
    heads = LayerProjections(48, 96, 3)
    outs = heads([torch.randn(2, 5, 48) for _ in range(3)])
    assert [o.shape for o in outs] == [torch.Size([2, 5, 96])] * 3
    assert count_params(heads) == 3 * (48 * 96 + 96)
    with pytest.raises(ValueError):
        heads([torch.randn(2, 5, 48)])


def test_distil_heads():
    assert count_params(DistilHeads(768, 768, 3)) == 3_543_552  # docs/methods.md#distilhubert: ≈ 3.54M
    torch.manual_seed(0)
    heads = DistilHeads(16, 24, 3)
    x = torch.randn(2, 7, 16)
    out = heads(x)
    assert out.shape == (2, 3, 7, 24)
    hidden = F.gelu(heads.hidden(x)).reshape(2, 7, 3, 16)
    for k in range(3):  # head k = its own Linear on chunk k
        torch.testing.assert_close(out[:, k], hidden[:, :, k] @ heads.split.weight[k] + heads.split.bias[k])
    assert isinstance(heads.split, SplitLinear)


# --------------------------------------------------------------------------- MACs
def test_macs_match_a_hand_count():
    cfg = HubertConfig(conv_layers=((8, 10, 5), (8, 3, 2), (16, 2, 2)), embed_dim=16, num_layers=2, num_heads=2,
                       ffn_dim=32, pos_conv_kernel=4, pos_conv_groups=2, reuse_pattern="2by1")
    t0 = (16000 - 10) // 5 + 1  # 3199
    t1 = (t0 - 3) // 2 + 1  # 1599
    t = (t1 - 2) // 2 + 1  # 799 frames
    cnn = t0 * 8 * 1 * 10 + t1 * 8 * 8 * 3 + t * 16 * 8 * 2
    proj = t * 16 * 16
    pos = (t + 1) * 16 * (16 // 2) * 4  # padding k//2 = 2 gives t + 1 outputs before SamePad
    ffn = 2 * t * 16 * 32
    computing = 4 * t * 16 * 16 + ffn + 2 * t * t * 16  # Q, K, V, O; QKᵀ and A·V
    reusing = 2 * t * 16 * 16 + ffn + t * t * 16  # V, O; A·V only
    assert macs_per_second(HubertModel(cfg)) == cnn + proj + pos + computing + reusing
    no_reuse = HubertConfig(**{**cfg.to_dict(), "reuse_pattern": "none"})
    assert macs_per_second(HubertModel(no_reuse)) == cnn + proj + pos + 2 * computing
    assert macs_per_second(MaskedPredictor(no_reuse, 5)) == cnn + proj + pos + 2 * computing


def test_lstm_macs_match_a_hand_count():
    cfg = LstmConfig(conv_layers=((8, 10, 5), (8, 3, 2), (16, 2, 2)), hidden=12, num_layers=2, input_proj=20)
    t0, t1 = 3199, 1599
    t = 799
    cnn = t0 * 8 * 10 + t1 * 8 * 8 * 3 + t * 16 * 8 * 2
    proj = t * 16 * 20
    lstm = t * 2 * 4 * 12 * (20 + 12) + t * 2 * 4 * 12 * (24 + 12)
    assert macs_per_second(LstmModel(cfg)) == cnn + proj + lstm

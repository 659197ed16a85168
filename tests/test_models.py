"""HuBERT encoder, prediction head and span masking against torchaudio and the paper's definitions."""

import pytest
import torch
import torch.nn.functional as F
import torchaudio
from torchaudio.models.wav2vec2.components import _compute_logits

from raydistill.evaluate.upstream import HubertUpstream
from raydistill.models.components import legacy_keys
from raydistill.models.config import ARCHITECTURES, HubertConfig, conv_frames, hubert_conv
from raydistill.models.heads import PredictionHead
from raydistill.models.hubert import HubertModel
from raydistill.models.student import MaskedPredictor
from raydistill.train.masking import compute_span_mask
from twins import torchaudio_twin

TINY = HubertConfig(conv_layers=hubert_conv(32), embed_dim=64, num_layers=3, num_heads=4, ffn_dim=128,
                    pos_conv_kernel=16, layer_drop=0.0)


def assert_matches_torchaudio(model: HubertModel, theirs, wave: torch.Tensor, lengths=None, atol=1e-5):
    with torch.no_grad():
        out = model(wave, lengths)
        layers, _ = theirs.extract_features(wave, lengths)
        final, _ = theirs(wave, lengths)
    assert len(out.states) == model.cfg.num_layers + 1
    valid = torch.ones(out.states[0].shape[:2], dtype=torch.bool) if out.padding_mask is None else ~out.padding_mask
    for ours, their in zip(out.states[1:-1], layers[:-1]):  # torchaudio leaves a pre-LN stack's final norm out
        torch.testing.assert_close(ours[valid], their[valid], atol=atol, rtol=1e-4)
    torch.testing.assert_close(out.states[-1][valid], final[valid], atol=atol, rtol=1e-4)


def test_hubert_base_with_torchaudios_weights_matches_torchaudios_forward():
    """The owned blocks are torchaudio's HuBERT: ``hubert_base()``'s state dict loads strictly
    into ``HubertModel(ARCHITECTURES["hubert-base"]).encoder`` and back, and every layer's output on
    a padded batch equals torchaudio's own forward."""
    torch.manual_seed(0)
    theirs = torchaudio.models.hubert_base().eval()
    model = HubertModel(ARCHITECTURES["hubert-base"]).eval()
    model.encoder.load_state_dict(theirs.state_dict(), strict=True)
    assert list(model.encoder.state_dict()) == list(theirs.state_dict())
    wave = torch.randn(2, 16000)
    wave[1, 12000:] = 0
    # torchaudio's CNN runs padded rows as they are; ours runs each row on its valid samples
    # (GroupNorm normalises over time), so compare the unpadded batch, then each row alone.
    assert_matches_torchaudio(model, theirs, wave, atol=1e-4)
    assert_matches_torchaudio(model, theirs, wave[1:, :12000], atol=1e-4)


@pytest.mark.parametrize("options", [{}, {"layer_norm_first": True, "extractor_mode": "layer_norm", "conv_bias": True},
                                     {"pos_conv_kernel": 15}])
def test_hidden_states_equal_torchaudio(options):
    torch.manual_seed(0)
    cfg = HubertConfig(**{**TINY.to_dict(), **options})
    model = HubertModel(cfg).eval()
    assert_matches_torchaudio(model, torchaudio_twin(cfg, model), torch.randn(2, 8000))


def test_torchaudio_weights_of_the_same_seed_are_the_same():
    """Built at one seed, our encoder and torchaudio's start from the same weights (the blocks
    create their parameters in torchaudio's order), so runs seeded before the switch to owned
    blocks start where they started."""
    torch.manual_seed(3)
    ours = HubertModel(TINY).encoder.state_dict()
    torch.manual_seed(3)
    theirs = torchaudio_twin(TINY).state_dict()
    assert list(ours) == list(theirs)
    for key in ours:
        torch.testing.assert_close(ours[key], theirs[key], atol=0, rtol=0, msg=key)


def test_old_weight_norm_names_load():
    """Checkpoints from before torch's weight-norm parametrisation (torchaudio < 2.1, fairseq
    conversions) name the positional conv's g and v ``weight_g``/``weight_v``."""
    torch.manual_seed(0)
    model = HubertModel(TINY).eval()
    state = model.encoder.state_dict()
    old = {k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1",
                                                                          "weight_v"): v for k, v in state.items()}
    assert "encoder.transformer.pos_conv_embed.conv.weight_g" in old
    again = HubertModel(TINY).eval()
    again.encoder.load_state_dict(legacy_keys(old), strict=True)
    wave = torch.randn(1, 6000)
    with torch.no_grad():
        torch.testing.assert_close(again(wave).states[-1], model(wave).states[-1])


def test_pre_layer_norm_final_state_is_normalised_output():
    cfg = HubertConfig(**{**TINY.to_dict(), "layer_norm_first": True, "extractor_mode": "layer_norm"})
    model = HubertModel(cfg).eval()
    wave = torch.randn(1, 6000)
    with torch.no_grad():
        torch.testing.assert_close(model(wave).states[-1], torchaudio_twin(cfg, model)(wave)[0])


def test_padded_batch_equals_one_by_one():
    torch.manual_seed(1)
    upstream = HubertUpstream(HubertModel(TINY).eval())
    a, b = torch.randn(7000), torch.randn(5200)
    wave = torch.zeros(2, 7000)
    wave[0], wave[1, :5200] = a, b
    with torch.no_grad():
        states, frames = upstream.hidden_states(wave, torch.tensor([7000, 5200]))
        alone, _ = upstream.hidden_states(b[None], torch.tensor([5200]))
    assert frames.tolist() == [conv_frames(7000, TINY.conv_layers), conv_frames(5200, TINY.conv_layers)]
    n = int(frames[1])
    for batched, single in zip(states, alone):
        torch.testing.assert_close(batched[1, :n], single[0], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("samples", [400, 401, 720, 16000, 32000, 12345])
def test_conv_frames_matches_the_cnn(samples):
    model = HubertModel(TINY)
    with torch.no_grad():
        feats, _ = model.cnn(torch.zeros(1, samples), None)
    assert feats.shape[1] == conv_frames(samples, TINY.conv_layers) == (samples - 400) // 320 + 1


def test_span_mask_coverage_matches_hubert():
    # prob 0.8 x span 10 with overlap masks about 1 - 0.92^10 = 0.566 of frames
    # (docs/methods.md#span-masking).
    # (per utterance: in a batch, rows are subsampled to the smallest count, see below)
    g = torch.Generator().manual_seed(0)
    coverage = torch.stack([compute_span_mask([500], 500, 0.8, 10, generator=g) for _ in range(200)]).float().mean()
    assert 0.55 < coverage.item() < 0.58
    mask = compute_span_mask([500] * 16, 500, 0.8, 10, generator=g)
    counts = mask.sum(1)
    assert (counts == counts[0]).all()  # fairseq's require_same_masks


def test_span_mask_never_masks_padding():
    g = torch.Generator().manual_seed(0)
    mask = compute_span_mask([100, 40], 100, 0.8, 10, generator=g)
    assert not mask[1, 40:].any()
    assert mask[1, :40].sum() == mask[0].sum() > 0


def test_prediction_head_matches_fairseq_logits():
    """Our K-way cosine logits give the same CE as torchaudio/fairseq's [positive; all] layout."""
    torch.manual_seed(0)
    head = PredictionHead(64, num_classes=10, final_dim=16)
    x = torch.randn(20, 64)
    target = torch.randint(0, 10, (20,))
    ours = F.cross_entropy(head(x), target)
    fairseq = _compute_logits(head.final_proj(x), target, head.label_embs)
    theirs = F.cross_entropy(fairseq, torch.zeros(20, dtype=torch.long))
    torch.testing.assert_close(ours, theirs)


def test_masked_predictor_gradients_reach_every_part():
    model = MaskedPredictor(TINY, num_classes=7, final_dim=16)
    wave = torch.randn(2, 6400)
    frames = conv_frames(6400, TINY.conv_layers)
    mask = compute_span_mask([frames] * 2, frames, 0.8, 4)
    out = model(wave, mask, feature_grad_mult=0.1)
    loss = F.cross_entropy(model.head(out.states[-1][mask]), torch.zeros(int(mask.sum()), dtype=torch.long))
    (loss + out.features_pen).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.model.mask_emb.grad.abs().sum() > 0


def test_presets_have_known_sizes():
    # torchaudio's hubert_base() encoder count (docs/methods.md#hubert-base-architecture): 94,370,944.
    assert sum(p.numel() for p in HubertModel(ARCHITECTURES["hubert-base"]).encoder.parameters()) == 94_370_944


@pytest.mark.parametrize("bad, message", [
    ({"embed_dim": 100, "num_heads": 12}, "divisible by num_heads"),
    ({"num_layers": 0}, "positive"),
    ({"dropout": 1.5}, "dropout"),
    ({"extractor_mode": "batch_norm"}, "extractor_mode"),
])
def test_config_rejects_bad_architectures(bad, message):
    with pytest.raises(ValueError, match=message):
        HubertConfig(**{**TINY.to_dict(), **bad})


def test_an_upstream_pickles_for_another_process():
    """compare scores upstreams in spawned processes: a HuBERT upstream must pickle (torch's
    weight-norm parametrisation left a closure hook that did not; ours is plain parameters)."""
    import pickle

    torch.manual_seed(0)
    upstream = HubertUpstream(HubertModel(TINY).eval())
    copy = pickle.loads(pickle.dumps(upstream))
    wave = torch.randn(1, 6000)
    with torch.no_grad():
        for a, b in zip(upstream.hidden_states(wave, torch.tensor([6000]))[0],
                        copy.hidden_states(wave, torch.tensor([6000]))[0]):
            torch.testing.assert_close(a, b, atol=0, rtol=0)

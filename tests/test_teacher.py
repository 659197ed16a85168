"""Teacher loaders: torchaudio state dicts, Hugging Face directories, raydistill checkpoints."""

import re

import pytest
import torch
import torchaudio

from raydistill.config import TrainConfig
from raydistill.errors import UserError
from raydistill.models.checkpoint import save_student
from raydistill.models.hubert import PRESETS, HubertModel, MaskedPredictor
from raydistill.teacher.sources import load_teacher, parse_spec

TINY = PRESETS["tiny-teacher"]
WAVE = torch.randn(1, 8000, generator=torch.Generator().manual_seed(0))


def tiny_pretrain_model():
    c = TINY
    return torchaudio.models.hubert_pretrain_model(
        extractor_mode=c.extractor_mode, extractor_conv_layer_config=[list(x) for x in c.conv_layers],
        extractor_conv_bias=c.conv_bias, encoder_embed_dim=c.embed_dim, encoder_projection_dropout=0.1,
        encoder_pos_conv_kernel=c.pos_conv_kernel, encoder_pos_conv_groups=c.pos_conv_groups,
        encoder_num_layers=c.num_layers, encoder_num_heads=c.num_heads, encoder_attention_dropout=0.1,
        encoder_ff_interm_features=c.ffn_dim, encoder_ff_interm_dropout=0.0, encoder_dropout=0.1,
        encoder_layer_norm_first=False, encoder_layer_drop=0.0, mask_prob=0.8, mask_selection="static",
        mask_other=0.0, mask_length=10, no_mask_overlap=False, mask_min_space=1, mask_channel_prob=0.0,
        mask_channel_selection="static", mask_channel_other=0.0, mask_channel_length=10,
        no_mask_channel_overlap=False, mask_channel_min_space=1, skip_masked=False, skip_nomask=False,
        num_classes=30, final_dim=64, feature_grad_mult=None,
    )


def test_torchaudio_encoder_state_dict(tmp_path):
    encoder = HubertModel(TINY).encoder.eval()
    torch.save(encoder.state_dict(), tmp_path / "enc.pt")
    teacher = load_teacher(f"torchaudio:{tmp_path / 'enc.pt'}#tiny-teacher")
    with torch.no_grad():
        expected, _ = encoder.extract_features(WAVE)
    last = TINY.num_layers
    feats, _ = teacher.layer_features(WAVE, torch.tensor([8000]), [1, last])
    torch.testing.assert_close(feats[1], expected[0])
    torch.testing.assert_close(feats[last], expected[last - 1])
    assert teacher.head is None


def test_torchaudio_pretrain_layout_brings_its_head(tmp_path):
    model = tiny_pretrain_model().eval()
    torch.save(model.state_dict(), tmp_path / "pre.pt")
    teacher = load_teacher(f"torchaudio:{tmp_path / 'pre.pt'}#tiny-teacher")
    assert teacher.head is not None and teacher.head.num_classes == 30
    torch.testing.assert_close(teacher.model.mask_emb, model.mask_generator.mask_embedding)
    with torch.no_grad():
        expected, _ = model.wav2vec2.extract_features(WAVE)
    feats, _ = teacher.layer_features(WAVE, torch.tensor([8000]), [3])
    torch.testing.assert_close(feats[3], expected[2])


def test_hubert_base_layout_is_recognised(tmp_path):
    torch.save(torchaudio.models.hubert_base().state_dict(), tmp_path / "base.pt")
    teacher = load_teacher(f"torchaudio:{tmp_path / 'base.pt'}")
    assert teacher.num_layers == 12 and teacher.model.cfg.embed_dim == 768


def test_wrong_shapes_name_the_file(tmp_path):
    torch.save(HubertModel(TINY).encoder.state_dict(), tmp_path / "tiny.pt")
    with pytest.raises(UserError) as err:
        load_teacher(f"torchaudio:{tmp_path / 'tiny.pt'}#hubert-base")
    channels = TINY.conv_layers[0][0]
    missing = 12 - TINY.num_layers
    assert re.fullmatch(
        re.escape(f"{tmp_path / 'tiny.pt'} does not match the hubert-base layout: size mismatch for "
                  f"feature_extractor.conv_layers.0.layer_norm.weight: file has [{channels}], expected [512] (")
        + r"\d+ tensors differ in size\); " + str(16 * missing)
        + re.escape(f" missing key(s), e.g. encoder.transformer.layers.{TINY.num_layers}.attention.k_proj.weight"),
        str(err.value),
    ), str(err.value)
    with pytest.raises(UserError, match="cannot tell the architecture"):
        load_teacher(f"torchaudio:{tmp_path / 'tiny.pt'}")


@pytest.mark.parametrize("spec, message", [
    ("torchaudio:/nonexistent/x.pt", "teacher file /nonexistent/x.pt does not exist"),
    ("raydistill:/nonexistent/s.pt", "checkpoint /nonexistent/s.pt does not exist"),
    ("hf:/nonexistent", "/nonexistent is not a Hugging Face model directory"),
    ("fairseq:/x.pt", "bad teacher"),
    ("embedded:x", "bad teacher"),
])
def test_bad_teacher_specs(spec, message):
    with pytest.raises(UserError, match=message):
        load_teacher(spec)


def test_not_a_state_dict(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(UserError, match="cannot read teacher file"):
        load_teacher(f"torchaudio:{tmp_path / 'junk.pt'}")


def test_raydistill_checkpoint_as_teacher(tmp_path):
    config = TrainConfig.from_dict({"student": "tiny-teacher", "targets": {"num_clusters": 12}})
    module = MaskedPredictor(config.student, 12, config.final_dim)
    save_student(tmp_path / "student.pt", config, module, {"spec": "mfcc39"})
    teacher = load_teacher(f"raydistill:{tmp_path / 'student.pt'}")
    assert teacher.head.num_classes == 12 and not teacher.model.training
    assert not any(p.requires_grad for p in teacher.model.parameters())


def test_hugging_face_directory(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.HubertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                    intermediate_size=128, conv_dim=(32,) * 7,
                                    num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    hf = transformers.HubertModel(cfg).eval()
    hf.save_pretrained(tmp_path / "hf")
    teacher = load_teacher(f"hf:{tmp_path / 'hf'}")
    with torch.no_grad():
        expected = hf(WAVE, output_hidden_states=True).hidden_states
    feats, _ = teacher.layer_features(WAVE, torch.tensor([8000]), [0, 1, 2])
    for layer in (0, 1, 2):
        torch.testing.assert_close(feats[layer], expected[layer], atol=1e-5, rtol=1e-5)


def test_parse_spec():
    assert parse_spec("embedded") == ("embedded", "")
    assert parse_spec("hf:/a/b") == ("hf", "/a/b")

"""Teacher loaders: torchaudio state dicts, Hugging Face directories, raydistill checkpoints."""

import re

import pytest
import torch
import torchaudio

from raydistill.config import TrainConfig
from raydistill.errors import UserError
from raydistill.models.checkpoint import save_student
from raydistill.models.config import ARCHITECTURES
from raydistill.models.hubert import HubertModel
from raydistill.models.student import MaskedPredictor
from raydistill.teacher.sources import load_teacher, parse_spec
from needs import missing, need_module
from twins import torchaudio_twin

TINY = ARCHITECTURES["tiny-teacher"]
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
    encoder = torchaudio_twin(TINY)  # a state dict that torchaudio wrote
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
    save_student(tmp_path / "student.pt", config, module, {"spec": "mfcc39"}, masks_input=True)
    teacher = load_teacher(f"raydistill:{tmp_path / 'student.pt'}")
    assert teacher.head.num_classes == 12 and not teacher.model.training
    assert not any(p.requires_grad for p in teacher.model.parameters())


def test_hugging_face_directory(tmp_path):
    transformers = need_module("transformers")
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


# --------------------------------------------------------------------------- mask embedding
@pytest.fixture(scope="module")
def real_teachers(tmp_path_factory):
    """torchaudio's own hubert_base (encoder layout, no mask embedding) and hubert_pretrain_base
    (with mask_generator.mask_embedding) state dicts, random weights, written once per module."""
    d = tmp_path_factory.mktemp("teachers")
    torch.save(torchaudio.models.hubert_base().state_dict(), d / "base.pt")
    pretrain = torchaudio.models.hubert_pretrain_base().state_dict()
    torch.save(pretrain, d / "pretrain.pt")
    return {"base": d / "base.pt", "pretrain": d / "pretrain.pt",
            "mask_embedding": pretrain["mask_generator.mask_embedding"].clone()}


def test_torchaudio_encoder_layout_has_no_trained_mask_embedding(real_teachers):
    teacher = load_teacher(f"torchaudio:{real_teachers['base']}")
    assert teacher.mask_embedding is False and teacher.describe()["mask_embedding"] is False


def test_torchaudio_pretrain_layout_brings_its_mask_embedding(real_teachers):
    teacher = load_teacher(f"torchaudio:{real_teachers['pretrain']}")
    assert teacher.mask_embedding is True and teacher.describe()["mask_embedding"] is True
    torch.testing.assert_close(teacher.model.mask_emb.data, real_teachers["mask_embedding"], rtol=0, atol=0)


@pytest.mark.parametrize("holder", ["tensor", "torchaudio state dict", "hf state dict"])
def test_explicit_mask_embedding_file(real_teachers, tmp_path, holder):
    """?mask_emb=FILE gives an encoder-layout teacher its embedding: the file's values, also in
    trials (the spec they load carries it); the cache key stays the teacher file's."""
    embedding = torch.randn(768, generator=torch.Generator().manual_seed(1))
    content = {"tensor": embedding, "torchaudio state dict": {"mask_generator.mask_embedding": embedding},
               "hf state dict": {"hubert.masked_spec_embed": embedding, "other": torch.zeros(3)}}[holder]
    torch.save(content, tmp_path / "emb.pt")
    spec = f"torchaudio:{real_teachers['base']}#hubert-base?mask_emb={tmp_path / 'emb.pt'}"
    teacher = load_teacher(spec)
    assert teacher.mask_embedding is True and teacher.source == spec
    torch.testing.assert_close(teacher.model.mask_emb.data, embedding, rtol=0, atol=0)
    assert teacher.key == load_teacher(f"torchaudio:{real_teachers['base']}#hubert-base").key


@pytest.mark.parametrize("content, message", [
    (lambda: torch.randn(192), r"expected a float tensor of shape \[64\] \(the teacher's width\), found \[192\]"),
    (lambda: {"weight": torch.randn(64)}, "found 0 such entries"),
    (lambda: torch.full((64,), float("nan")), "holds NaN or inf"),
])
def test_bad_mask_embedding_file(tmp_path, content, message):
    transformers = need_module("transformers")
    cfg = transformers.HubertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                    intermediate_size=128, conv_dim=(32,) * 7,
                                    num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    transformers.HubertModel(cfg).save_pretrained(tmp_path / "hf")
    torch.save(content(), tmp_path / "emb.pt")
    with pytest.raises(UserError, match=message):
        load_teacher(f"hf:{tmp_path / 'hf'}?mask_emb={tmp_path / 'emb.pt'}")


def test_hugging_face_mask_embedding_only_when_the_weights_hold_it(tmp_path):
    """transformers creates masked_spec_embed (at random) even when the weights lack it: the
    teacher has a trained one only if the file held it."""
    transformers = need_module("transformers")
    safetensors = need_module("safetensors.torch")
    cfg = transformers.HubertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                    intermediate_size=128, conv_dim=(32,) * 7,
                                    num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    hf = transformers.HubertModel(cfg)
    hf.save_pretrained(tmp_path / "with")
    teacher = load_teacher(f"hf:{tmp_path / 'with'}")
    assert teacher.mask_embedding is True
    torch.testing.assert_close(teacher.model.mask_emb.data, hf.masked_spec_embed.data, rtol=0, atol=0)

    hf.save_pretrained(tmp_path / "without")
    weights = safetensors.load_file(tmp_path / "without" / "model.safetensors")
    del weights["masked_spec_embed"]
    safetensors.save_file(weights, tmp_path / "without" / "model.safetensors", metadata={"format": "pt"})
    reloaded = transformers.HubertModel.from_pretrained(str(tmp_path / "without"), local_files_only=True)
    assert reloaded.masked_spec_embed is not None  # created anyway: the attribute says nothing
    assert load_teacher(f"hf:{tmp_path / 'without'}").mask_embedding is False

    # the embedding taken from another checkpoint's weights file
    given = load_teacher(f"hf:{tmp_path / 'without'}?mask_emb={tmp_path / 'with' / 'model.safetensors'}")
    assert given.mask_embedding is True
    torch.testing.assert_close(given.model.mask_emb.data, hf.masked_spec_embed.data, rtol=0, atol=0)


def test_raydistill_checkpoint_mask_embedding_follows_its_method(tmp_path):
    """Trained by a method that masks its input (DiceHuBERT, the embedded teacher): yes; by one
    that never does (STaR freezes mask_emb at its random initialisation): no. The checkpoint
    records it; one written before it did is read as the embedded teacher's kind."""
    from raydistill.methods import get_method
    from raydistill.teacher.info import TeacherInfo

    masked = TrainConfig.from_dict({"student": "tiny-teacher", "targets": {"num_clusters": 12}})
    save_student(tmp_path / "dice.pt", masked, MaskedPredictor(masked.student, 12, masked.final_dim), {},
                 masks_input=get_method(masked.method).masks(masked))
    assert load_teacher(f"raydistill:{tmp_path / 'dice.pt'}").mask_embedding is True
    unmasked = TrainConfig.from_dict({"method": "star", "student": "tiny-teacher"})
    save_student(tmp_path / "star.pt", unmasked, get_method("star").build(unmasked, TeacherInfo(4, 192)), {},
                 masks_input=get_method("star").masks(unmasked))
    assert load_teacher(f"raydistill:{tmp_path / 'star.pt'}").mask_embedding is False
    for name, method, expected in (("old-pretrain.pt", "hubert-pretrain", True), ("old-dice.pt", "dicehubert", False)):
        config = TrainConfig.from_dict({"method": method, "student": "tiny-teacher", "targets": {"num_clusters": 12}})
        module = MaskedPredictor(config.student, 12, config.final_dim)
        torch.save({"config": config.to_dict(), "state_dict": module.state_dict(), "teacher": {}}, tmp_path / name)
        old = load_teacher(f"raydistill:{tmp_path / name}")
        assert old.mask_embedding is expected and old.head.num_classes == 12
        torch.testing.assert_close(old.model.mask_emb, module.model.mask_emb)


def test_mask_embedding_spec_options():
    with pytest.raises(UserError, match="the options after '\\?' are mask_emb=FILE and head=FILE"):
        load_teacher("torchaudio:/x.pt?emb=/e.pt")
    with pytest.raises(UserError, match="head= is given twice"):
        load_teacher("torchaudio:/x.pt?head=/a.pt&head=/b.pt")
    with pytest.raises(UserError, match="needs a file"):
        load_teacher("torchaudio:/x.pt?mask_emb=")
    with pytest.raises(UserError, match="bad teacher"):
        parse_spec("embedded?mask_emb=/e.pt")


# --------------------------------------------------------------------------- pre-training head
def test_a_head_file_gives_an_encoder_only_teacher_its_logits(real_teachers, tmp_path):
    """?head=FILE: Hugging Face's HubertModel and torchaudio's hubert_base hold no pre-training
    head, which kd reads; the head comes from a file (here torchaudio's logit_generator entries,
    or fairseq's names), and makes the teacher's key (its logits differ)."""
    from raydistill.prepare import check_needs
    from raydistill.targets.store import TeacherNeeds

    pretrain = torch.load(real_teachers["pretrain"], weights_only=True)
    torch.save({k: v for k, v in pretrain.items() if k.startswith("logit_generator.")}, tmp_path / "head.pt")
    fairseq = {"final_proj.weight": pretrain["logit_generator.final_proj.weight"],
               "final_proj.bias": pretrain["logit_generator.final_proj.bias"],
               "label_embs_concat": pretrain["logit_generator.label_embeddings"]}
    torch.save(fairseq, tmp_path / "fairseq-head.pt")
    plain = load_teacher(f"torchaudio:{real_teachers['base']}")
    with pytest.raises(UserError, match="no pre-training head"):
        check_needs(TeacherNeeds(logits=True), 12, plain.head is not None, plain.spec)
    with_head = load_teacher(f"torchaudio:{real_teachers['base']}?head={tmp_path / 'head.pt'}")
    check_needs(TeacherNeeds(logits=True), 12, with_head.head is not None, with_head.spec)
    assert with_head.head.num_classes == 100 and with_head.key != plain.key
    full = load_teacher(f"torchaudio:{real_teachers['pretrain']}")
    last = torch.randn(5, 768)
    torch.testing.assert_close(with_head.logits(last), full.logits(last))
    both = load_teacher(f"torchaudio:{real_teachers['base']}?mask_emb={real_teachers['pretrain']}"
                        f"&head={tmp_path / 'fairseq-head.pt'}")
    assert both.mask_embedding and both.describe()["num_classes"] == 100
    torch.testing.assert_close(both.logits(last), full.logits(last))
    with pytest.raises(UserError, match="has a pre-training head already"):
        load_teacher(f"torchaudio:{real_teachers['pretrain']}?head={tmp_path / 'head.pt'}")
    torch.save({**fairseq, "final_proj.weight": torch.zeros(256, 64)}, tmp_path / "narrow.pt")
    with pytest.raises(UserError, match="do not fit a teacher of width 768"):
        load_teacher(f"torchaudio:{real_teachers['base']}?head={tmp_path / 'narrow.pt'}")
    torch.save({"final_proj.weight": fairseq["final_proj.weight"]}, tmp_path / "partial.pt")
    with pytest.raises(UserError, match="expected one entry named .*final_proj.bias"):
        load_teacher(f"torchaudio:{real_teachers['base']}?head={tmp_path / 'partial.pt'}")


def test_a_head_file_with_a_hugging_face_teacher(base_teachers, real_teachers, tmp_path):
    if "hf" not in base_teachers:
        missing("transformers is not installed")
    pretrain = torch.load(real_teachers["pretrain"], weights_only=True)
    torch.save({k: v for k, v in pretrain.items() if k.startswith("logit_generator.")}, tmp_path / "head.pt")
    teacher = load_teacher(f"hf:{base_teachers['hf']}?head={tmp_path / 'head.pt'}")
    assert teacher.head is not None and teacher.describe()["num_classes"] == 100

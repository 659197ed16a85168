"""torchaudio's own models for the tests that hold raydistill's encoder against them."""

import torchaudio

from raydistill.models.config import HubertConfig


def torchaudio_twin(cfg: HubertConfig, model=None) -> torchaudio.models.Wav2Vec2Model:
    """torchaudio's own model of the same architecture, holding ``model``'s weights if given
    (strict load: the state-dict layouts are the same)."""
    theirs = torchaudio.models.wav2vec2_model(
        extractor_mode=cfg.extractor_mode, extractor_conv_layer_config=[list(c) for c in cfg.conv_layers],
        extractor_conv_bias=cfg.conv_bias, encoder_embed_dim=cfg.embed_dim,
        encoder_projection_dropout=cfg.dropout_input, encoder_pos_conv_kernel=cfg.pos_conv_kernel,
        encoder_pos_conv_groups=cfg.pos_conv_groups, encoder_num_layers=cfg.num_layers,
        encoder_num_heads=cfg.num_heads, encoder_attention_dropout=cfg.attention_dropout,
        encoder_ff_interm_features=cfg.ffn_dim, encoder_ff_interm_dropout=cfg.activation_dropout,
        encoder_dropout=cfg.dropout, encoder_layer_norm_first=cfg.layer_norm_first,
        encoder_layer_drop=cfg.layer_drop, aux_num_out=None)
    if model is not None:
        theirs.load_state_dict(model.encoder.state_dict(), strict=True)
    return theirs.eval()

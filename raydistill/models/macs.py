"""Multiply-accumulates of a student's forward pass per second of audio, kept next to the
models (docs/architecture.md#flops-macs-and-mfu).

Counted on a real forward pass with hooks, so the count follows the architecture actually
built (thin CNN, no feature projection, reusing layers without Q/K, LSTM sizes):

* ``Conv1d`` (including the grouped positional conv): output elements × (C_in / groups) × kernel;
* ``Linear``: rows × in × out;
* ``LSTM``: per step and direction 4·h·(in + h), over all steps and layers;
* attention matmuls, which hooks do not see, from the shapes: QKᵀ and A·V are T²·D each; a
  layer that reuses an attention map does only A·V (docs/methods.md#attention-map-reuse).

Element-wise operations, norms, biases and softmax are ignored.
"""

from __future__ import annotations

import torch
from torch import nn

from raydistill.models.components import WeightNormConv1d
from raydistill.models.hubert import HubertModel

SAMPLE_RATE = 16000


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _conv(module: nn.Conv1d, inputs, output) -> int:
    return output.numel() * (module.in_channels // module.groups) * module.kernel_size[0]


def _linear(module: nn.Linear, inputs, output) -> int:
    return output.numel() // module.out_features * module.in_features * module.out_features


def _lstm(module: nn.LSTM, inputs, output) -> int:
    x = inputs[0]
    if isinstance(x, nn.utils.rnn.PackedSequence):
        steps = x.data.shape[0]  # Σ lengths over the batch
    else:
        steps = x.shape[0] * x.shape[1] if x.ndim == 3 else x.shape[0]
    h = module.hidden_size
    directions = 2 if module.bidirectional else 1
    total = 0
    for layer in range(module.num_layers):
        size = module.input_size if layer == 0 else h * directions
        total += steps * directions * 4 * h * (size + h)
    return total


def _weight_norm_conv(module: WeightNormConv1d, inputs, output) -> int:
    return output.numel() * (module.in_channels // module.groups) * module.kernel_size


_COUNTERS = ((nn.Conv1d, _conv), (WeightNormConv1d, _weight_norm_conv), (nn.Linear, _linear), (nn.LSTM, _lstm))


def macs_per_second(model: nn.Module, seconds: float = 1.0) -> int:
    """MACs of one eval-mode forward pass over ``seconds`` of 16 kHz audio (batch 1), per second.

    Args:
        model: a :class:`HubertModel` or ``LstmModel`` (a wrapper holding one in ``.model``, a
            ``MaskedPredictor`` or an evaluation upstream, counts that encoder only: heads are
            training-only).
        seconds: input length; attention grows as T², so longer inputs give more MACs per second.
    """
    inner = getattr(model, "model", None)  # a MaskedPredictor or an evaluation upstream: its encoder
    if isinstance(inner, nn.Module):
        model = inner
    count = [0]

    def hook(counter):
        return lambda module, inputs, output: count.__setitem__(0, count[0] + counter(module, inputs, output))

    handles = []
    for module in model.modules():
        for kind, counter in _COUNTERS:
            if isinstance(module, kind):
                handles.append(module.register_forward_hook(hook(counter)))
                break
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters())
        wave = torch.zeros(1, int(round(seconds * SAMPLE_RATE)), device=param.device, dtype=param.dtype)
        with torch.no_grad():
            out = model(wave)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    total = count[0]
    if isinstance(model, HubertModel):
        frames = out.states[0].shape[1]
        per_matmul = frames * frames * model.cfg.embed_dim  # Σ over heads of T·T·head_dim
        total += sum(2 * per_matmul if computes else per_matmul for computes in model.cfg.computes_attention)
    return int(round(total / seconds))

"""Which heads and FFN neurons a width cut keeps: two rankings of the same units, measured on
windows of the data's train split (the val split scores the result).

- ``activation`` (Minitron, arXiv 2407.14679): a head's mean L2 output norm and a neuron's mean
  |activation| (the value the FFN's last projection reads); forward passes only.
- ``gradient``: the toolkit's gradient importance, per unit: the mean over windows of |dL/dm| for
  a scale m = 1 on the unit's output (Michel et al.'s head importance; for a neuron the same
  first-order Taylor term), one backward pass per batch.

``masked`` applies a :class:`~inheritune.models.width_cut.WidthPlan` to the reference with the same
hooks, the function the cut model must compute.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from transformers import PreTrainedModel

from inheritune.analysis.hooks import ffn_activations, head_mask, head_outputs, neuron_mask
from inheritune.analysis.unit_importance import batched, frozen_weights, lm_examples, padded, scored_losses
from inheritune.models.families import num_layers
from inheritune.models.width_cut import WidthPlan, geometry
from inheritune.options import shown
from inheritune.specs import Choice


class WidthRanking(Choice):
    """How heads and FFN neurons are ranked for a width cut (``--width-by``, ``budget.width_by``)."""

    choices = ("activation", "gradient")


RANKINGS = WidthRanking.choices


def unit_scores(
    model: PreTrainedModel, windows: torch.Tensor, by: str | WidthRanking = "activation"
) -> tuple[np.ndarray, np.ndarray]:
    """Keep scores ``([layers, heads], [layers, neurons])`` by ranking ``by``: higher is kept first."""
    ranking = by if isinstance(by, WidthRanking) else WidthRanking(by, shown("width_by"))
    return activation_scores(model, windows) if ranking == "activation" else gradient_scores(model, windows)


@torch.no_grad()
def activation_scores(
    model: PreTrainedModel, windows: torch.Tensor, batch_size: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """Mean over tokens of each head's output L2 norm and each neuron's |activation|."""
    heads, _kv, _w, neurons = geometry(model.config)
    layers = num_layers(model.config)
    head_sum, neuron_sum = torch.zeros(layers, heads), torch.zeros(layers, neurons)
    with head_outputs(model) as per_head, ffn_activations(model) as per_neuron:
        for batch in windows.split(batch_size):
            model(input_ids=batch.to(model.device), use_cache=False)
            for layer in range(layers):
                head_sum[layer] += per_head[layer].float().norm(dim=-1).flatten(0, -2).sum(0).cpu()
                neuron_sum[layer] += per_neuron[layer].float().abs().flatten(0, -2).sum(0).cpu()
    tokens = windows.numel()
    return (head_sum / tokens).numpy(), (neuron_sum / tokens).numpy()


def gradient_scores(model: PreTrainedModel, windows: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean over windows of |dL/dm| for a unit scale m = 1 (per-window masks, one backward per batch)."""
    heads, _kv, _w, neurons = geometry(model.config)
    layers = num_layers(model.config)
    examples = lm_examples(windows)

    def run(batch):
        head_scale = torch.ones(len(batch), layers, heads, requires_grad=True)
        neuron_scale = torch.ones(len(batch), layers, neurons, requires_grad=True)
        with head_mask(model, head_scale), neuron_mask(model, neuron_scale):
            losses, _ = scored_losses(model, padded(batch), batch)
            grads = torch.autograd.grad(losses.sum(), [head_scale, neuron_scale])
        return [g.abs().sum(0) for g in grads]

    head_sum, neuron_sum = torch.zeros(layers, heads), torch.zeros(layers, neurons)
    with frozen_weights(model):
        for h, n in batched(model, examples, run, "width importance", backward=True):
            head_sum += h
            neuron_sum += n
    return (head_sum / len(examples)).numpy(), (neuron_sum / len(examples)).numpy()


@contextmanager
def masked(model: PreTrainedModel, width: WidthPlan) -> Iterator[PreTrainedModel]:
    """The reference computing what the cut model computes: cut query heads and neurons output zero
    (a key/value head only feeds its own query heads, so cutting a group is cutting those)."""
    heads, _kv, _w, neurons = geometry(model.config)
    keep_heads = torch.zeros(num_layers(model.config), heads)
    keep_neurons = torch.zeros(num_layers(model.config), neurons)
    for layer, (h, n) in enumerate(zip(width.heads, width.neurons, strict=True)):
        keep_heads[layer, h] = 1.0
        keep_neurons[layer, n] = 1.0
    with head_mask(model, keep_heads), neuron_mask(model, keep_neurons):
        yield model

"""One mechanism for per-unit quantities: attention probabilities, head and neuron masks, FFN knock-outs.

Every analysis (attention rank, importance, pruning, induction) goes through these context
managers; each restores the model exactly as it found it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
from transformers import PreTrainedModel

from inheritune.errors import InherituneError
from inheritune.models.families import blocks, family_of, num_heads

Hook = tuple[torch.nn.Module, Callable]


@contextmanager
def hooks(
    pre: Iterable[Hook] = (), post: Iterable[Hook] = (), pre_with_kwargs: bool = False, post_with_kwargs: bool = False
) -> Iterator[None]:
    """Attach forward pre-hooks and forward hooks for the duration of a ``with`` block.

    The register / try / remove pattern, written once (TransformerLens's ``hooks()`` context):
    every capture and intervention below, and in ``depth`` and ``analyze``, goes through it, so a
    model always leaves an analysis with no hook left behind, whatever was raised.
    """
    handles = []
    try:
        handles += [m.register_forward_pre_hook(fn, with_kwargs=pre_with_kwargs) for m, fn in pre]
        handles += [m.register_forward_hook(fn, with_kwargs=post_with_kwargs) for m, fn in post]
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def eager_attention(model: PreTrainedModel) -> Iterator[PreTrainedModel]:
    """Temporarily use the eager attention kernel, the one that can return probabilities."""
    previous = model.config._attn_implementation
    if previous != "eager":
        model.set_attn_implementation("eager")
    try:
        yield model
    finally:
        if previous != "eager":
            model.set_attn_implementation(previous)


@torch.no_grad()
def attention_probs(model: PreTrainedModel, input_ids: torch.Tensor) -> list[torch.Tensor]:
    """Post-softmax attention per layer, each ``[batch, heads, T, T]`` in fp32."""
    with eager_attention(model):
        out = model(input_ids=input_ids, output_attentions=True)
    if not out.attentions or out.attentions[0] is None:
        raise InherituneError(f"{model.config.model_type} returned no attention probabilities")
    return [a.float() for a in out.attentions]


def _out_projections(model: PreTrainedModel) -> list[torch.nn.Module]:
    family = family_of(model.config)
    return [block.get_submodule(family.attn_out) for block in blocks(model)]


@contextmanager
def head_mask(model: PreTrainedModel, mask: torch.Tensor) -> Iterator[torch.Tensor]:
    """Scale each head's output by ``mask[layer, head]`` (0 removes the head; a leaf with
    ``requires_grad`` gives the gradient importance dL/dmask). A ``[batch, layers, heads]`` mask
    scales every batch row by its own mask (per-example gradients from one backward pass).

    Works on the input of the attention output projection, which is the concatenation of the
    heads' outputs in every family, so no family needs its own attention code.
    """
    heads = num_heads(model.config)
    projections = _out_projections(model)
    if mask.dim() not in (2, 3) or tuple(mask.shape[-2:]) != (len(projections), heads):
        raise InherituneError(f"head mask must be [batch x] {len(projections)} x {heads}, got {tuple(mask.shape)}")

    def hook_for(layer: int):
        def pre_hook(_module, args):
            x = args[0]  # [batch, T, heads * head_dim]
            scale = mask.select(-2, layer).to(x.device, x.dtype)  # [heads] or [batch, heads]
            scale = scale[:, None, :, None] if scale.dim() == 2 else scale[:, None]
            scaled = x.unflatten(-1, (heads, x.shape[-1] // heads)) * scale
            return (scaled.flatten(-2), *args[1:])

        return pre_hook

    with hooks(pre=[(p, hook_for(i)) for i, p in enumerate(projections)]):
        yield mask


@contextmanager
def head_outputs(model: PreTrainedModel) -> Iterator[dict[int, torch.Tensor]]:
    """Record each layer's per-head outputs ``[batch, T, heads, head_dim]`` (before the output projection)."""
    heads = num_heads(model.config)
    records: dict[int, torch.Tensor] = {}

    def hook_for(layer: int):
        def pre_hook(_module, args):
            records[layer] = args[0].detach().unflatten(-1, (heads, args[0].shape[-1] // heads))

        return pre_hook

    with hooks(pre=[(p, hook_for(i)) for i, p in enumerate(_out_projections(model))]):
        yield records


@contextmanager
def ffn_knockout(model: PreTrainedModel, layers: Iterable[int]) -> Iterator[None]:
    """Remove the FFN contribution of the given layers (their FFN output becomes zero)."""
    family = family_of(model.config)
    all_blocks = blocks(model)
    zero = lambda _m, _a, out: torch.zeros_like(out)  # noqa: E731
    with hooks(post=[(all_blocks[layer].get_submodule(family.ffn_out), zero) for layer in layers]):
        yield


def _ffn_projections(model: PreTrainedModel) -> list[torch.nn.Module]:
    family = family_of(model.config)
    return [block.get_submodule(family.ffn_proj) for block in blocks(model)]


@contextmanager
def neuron_mask(model: PreTrainedModel, mask: torch.Tensor) -> Iterator[torch.Tensor]:
    """Scale each FFN neuron's activation by ``mask[layer, neuron]`` (``[batch, layers, neurons]``:
    per batch row), on the input of the FFN's last projection, like ``head_mask`` for heads."""
    projections = _ffn_projections(model)
    if mask.dim() not in (2, 3) or mask.shape[-2] != len(projections):
        raise InherituneError(f"neuron mask must be [batch x] {len(projections)} x neurons, got {tuple(mask.shape)}")

    def hook_for(layer: int):
        def pre_hook(_module, args):
            x = args[0]  # [batch, T, neurons], or [batch * T, neurons] where a family flattens tokens
            scale = mask.select(-2, layer).to(x.device, x.dtype)
            if scale.dim() == 2:  # per batch row
                rows = x.reshape(scale.shape[0], -1, x.shape[-1]) * scale[:, None]
                return (rows.reshape(x.shape), *args[1:])
            return (x * scale, *args[1:])

        return pre_hook

    with hooks(pre=[(p, hook_for(i)) for i, p in enumerate(projections)]):
        yield mask


@contextmanager
def ffn_activations(model: PreTrainedModel) -> Iterator[dict[int, torch.Tensor]]:
    """Record each layer's FFN activations ``[..., neurons]`` (the input of its last projection)."""
    records: dict[int, torch.Tensor] = {}

    def hook_for(layer: int):
        def pre_hook(_module, args):
            records[layer] = args[0].detach()

        return pre_hook

    with hooks(pre=[(p, hook_for(i)) for i, p in enumerate(_ffn_projections(model))]):
        yield records


@contextmanager
def final_residual(model: PreTrainedModel) -> Iterator[dict[str, torch.Tensor]]:
    """Record the residual stream entering the final norm, ``[batch, T, hidden]`` under ``"resid"``:
    what the unembedding reads, for direct-logit measures such as a head's copying score."""
    records: dict[str, torch.Tensor] = {}
    norm = model.get_submodule(family_of(model.config).final_norm)

    def pre_hook(_module, args):
        records["resid"] = args[0].detach()

    with hooks(pre=[(norm, pre_hook)]):
        yield records

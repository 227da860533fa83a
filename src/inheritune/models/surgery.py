"""Build models from other models' blocks: derive (inherit the first n), deepen (add k more) and
drop_blocks (remove chosen blocks, for layer pruning).

(The loop that deepens a model round after round until it matches its reference is
``growth.grow.grow_until_matched``; this module only does the block surgery.)

All three are one operation, :func:`stack_blocks`: a new model with the template's architecture
whose i-th block is copied from ``sources[i]``; everything outside the blocks (embeddings,
positional embeddings, final norm, LM head) comes from the template.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

from inheritune.errors import InherituneError
from inheritune.models.families import Family, family_of, module, num_layers, set_num_layers
from inheritune.models.loading import load_model

Init = Literal["all", "attention", "mlp", "none"]
INIT_CHOICES: tuple[str, ...] = ("all", "attention", "mlp", "none")


def parse_layers(spec: int | str | Sequence[int], total: int) -> list[int]:
    """Reference block indices from a count (``15`` = first 15) or a list (``"0-11,15"``)."""
    if isinstance(spec, str) and spec.strip().isdigit():
        spec = int(spec)
    if isinstance(spec, int):
        if not 1 <= spec <= total:
            raise InherituneError(f"--layers {spec} is out of range: the reference has {total} layers (1..{total})")
        return list(range(spec))
    if isinstance(spec, str):
        indices: list[int] = []
        for part in spec.split(","):
            part = part.strip()
            try:
                if "-" in part:
                    lo, hi = (int(x) for x in part.split("-", 1))
                    if hi < lo:
                        raise ValueError
                    indices.extend(range(lo, hi + 1))
                else:
                    indices.append(int(part))
            except ValueError:
                raise InherituneError(f"--layers: cannot parse '{part}' (use N or a list like 0-11,15)") from None
    else:
        indices = [int(i) for i in spec]
    if not indices:
        raise InherituneError("--layers is empty")
    bad = [i for i in indices if not 0 <= i < total]
    if bad:
        raise InherituneError(f"--layers: index {bad[0]} is out of range: the reference has layers 0..{total - 1}")
    seen: set[int] = set()
    for i in indices:
        if i in seen:
            raise InherituneError(f"--layers: index {i} is repeated")
        seen.add(i)
    return indices


def _block_parts(family: Family, init: str) -> tuple[str, ...] | None:
    """Submodule names of a block to copy; None means the whole block."""
    if init not in INIT_CHOICES:
        raise InherituneError(f"--init must be one of {', '.join(INIT_CHOICES)}, not '{init}'")
    return {"all": None, "attention": family.attn_parts, "mlp": family.mlp_parts, "none": ()}[init]


@torch.no_grad()
def stack_blocks(
    template: PreTrainedModel,
    sources: Sequence[tuple[PreTrainedModel, int]],
    init: str = "all",
    seed: int = 0,
) -> PreTrainedModel:
    """A model like ``template`` whose block i is a copy of block ``sources[i][1]`` of ``sources[i][0]``.

    Parts a block does not inherit (per ``init``) keep the family's own fresh initialisation,
    drawn with ``seed`` so that a derivation is reproducible.
    """
    family = family_of(template.config)
    parts = _block_parts(family, init)
    config = copy.deepcopy(template.config)
    set_num_layers(config, len(sources))
    for key in family.layer_lists:
        if getattr(config, key, None) is not None:
            setattr(config, key, [getattr(src.config, key)[i] for src, i in sources])
    for src, _ in sources:
        if family_of(src.config) is not family:
            raise InherituneError(f"cannot mix {src.config.model_type} blocks into a {config.model_type} model")

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=template.dtype)
    for path in (family.embed, family.final_norm, family.head):
        model.get_submodule(path).load_state_dict(template.get_submodule(path).state_dict())
    for path in (family.pos_embed, *family.extras):  # optional: only some configs have them
        if path and (src := module(template, path)) is not None:
            module(model, path).load_state_dict(src.state_dict())
    new_blocks = model.get_submodule(family.blocks)
    for new_block, (src, i) in zip(new_blocks, sources):
        old_block = src.get_submodule(family.blocks)[i]
        for part in parts if parts is not None else ("",):
            dst, from_ = (new_block, old_block) if part == "" else (module(new_block, part), module(old_block, part))
            if dst is not None and from_ is not None:
                dst.load_state_dict(from_.state_dict())
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    return model.eval()


def inherit(
    reference: str | Path | PreTrainedModel,
    layers: int | str | Sequence[int],
    init: Init = "all",
    seed: int = 0,
) -> PreTrainedModel:
    """The Inheritune step in memory: a smaller model made of the reference's chosen blocks
    (default: the first n). ``inheritune.derive`` is the command, which also writes the folder.

    >>> small = inherit("smollm2-135m", layers=15)
    """
    ref = reference if isinstance(reference, PreTrainedModel) else load_model(reference)
    indices = parse_layers(layers, num_layers(ref.config))
    return stack_blocks(ref, [(ref, i) for i in indices], init=init, seed=seed)


def first_and_last(layers: int, keep_last: int, total: int) -> list[int]:
    """The reference blocks of a ``layers``-deep model: its first ``layers - keep_last`` blocks and
    its last ``keep_last`` (0 = the paper's first n). Depth-pruning work (ShortGPT, Gromov et al.)
    keeps the last blocks, which map the residual stream onto the output space."""
    if not 0 <= keep_last < layers <= total:
        raise InherituneError(f"need 0 <= keep_last < layers <= {total} (the reference's depth), "
                              f"not keep_last {keep_last} and layers {layers}")
    return list(range(layers - keep_last)) + list(range(total - keep_last, total))


def deepen(
    model: PreTrainedModel,
    reference: PreTrainedModel,
    add: int,
    mode: Literal["reference", "duplicate"] = "reference",
    keep_last: int = 0,
) -> PreTrainedModel:
    """Deepen a trained model by ``add`` blocks, keeping its own trained blocks.

    The new blocks go after the model's first ``n - keep_last`` blocks, before its kept tail
    (``keep_last`` = 0: at the end). ``reference`` mode takes the reference's next blocks after
    that prefix (the paper's growth); ``duplicate`` repeats the prefix's last ``add`` blocks.
    """
    n = num_layers(model.config)
    if add < 1:
        raise InherituneError(f"deepen: the step must be at least 1 layer, not {add}")
    if not 0 <= keep_last < n:
        raise InherituneError(f"deepen: keep_last must be in 0..{n - 1}, not {keep_last}")
    prefix = n - keep_last
    head = [(model, i) for i in range(prefix)]
    tail = [(model, i) for i in range(prefix, n)]
    if mode == "reference":
        total = num_layers(reference.config)
        if n + add > total:
            raise InherituneError(f"cannot grow {n} -> {n + add} layers: the reference has only {total}")
        new = [(reference, i) for i in range(prefix, prefix + add)]
    elif mode == "duplicate":
        if add > prefix:
            raise InherituneError(f"cannot duplicate {add} blocks of a {prefix}-block prefix")
        new = [(model, i) for i in range(prefix - add, prefix)]
    else:
        raise InherituneError(f"grow mode must be 'reference' or 'duplicate', not '{mode}'")
    return stack_blocks(model, head + new + tail)


def drop_blocks(model: PreTrainedModel, layers: Sequence[int]) -> PreTrainedModel:
    """A copy of ``model`` without the blocks ``layers`` (layer pruning: ShortGPT, Gromov et al.).

    Every other tensor is copied bit for bit; the config's depth and its per-layer lists (e.g.
    Gemma's ``layer_types``) follow the kept blocks, so the saved folder reloads with
    ``AutoModelForCausalLM``. The copy lands on the model's device (a model spread over devices
    by ``device_map`` gives a CPU copy).
    """
    total = num_layers(model.config)
    drop = set(layers)
    if bad := sorted(i for i in drop if not 0 <= i < total):
        raise InherituneError(f"cannot drop layer {bad[0]}: the model has layers 0..{total - 1}")
    if len(drop) == total:
        raise InherituneError(f"cannot drop all {total} layers of the model")
    pruned = stack_blocks(model, [(model, i) for i in range(total) if i not in drop])
    return pruned if getattr(model, "hf_device_map", None) else pruned.to(model.device)

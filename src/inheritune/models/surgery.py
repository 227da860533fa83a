"""Build models from other models' blocks: derive (inherit the first n), deepen (add k more) and
drop_blocks (remove chosen blocks, for layer pruning).

(The loop that deepens a model round after round until it matches its reference is
``growth.grow.grow_until_matched``; this module only does the block surgery.)

All three are one operation, :func:`stack_blocks`: a new model with the template's architecture
whose i-th block is copied from ``sources[i]``; everything outside the blocks (embeddings,
positional embeddings, final norm, LM head) comes from the template.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal, cast

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

from inheritune.errors import InherituneError
from inheritune.models.families import Family, blocks, config_of_blocks, family_of, module, num_layers
from inheritune.models.loading import load_model

Init = Literal["all", "attention", "mlp", "none"]
PROVENANCE = "inheritune"  # the config key that records a built model's reference blocks
INIT_CHOICES: tuple[str, ...] = ("all", "attention", "mlp", "none")
GROW_MODES: tuple[str, ...] = ("reference", "duplicate")


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


def spans(indices: Sequence[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``"0-2,5,7-8"``: block lists as people write them (``parse_layers``' inverse)."""
    parts: list[str] = []
    run: list[int] = []
    for i in indices:
        if run and i != run[-1] + 1:
            parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
            run = []
        run.append(i)
    if run:
        parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(parts)


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
    reference: str | None = None,
) -> PreTrainedModel:
    """A model like ``template`` whose block i is a copy of block ``sources[i][1]`` of ``sources[i][0]``.

    Parts a block does not inherit (per ``init``) keep the family's own fresh initialisation,
    drawn with ``seed`` so that a derivation is reproducible. The config records which reference
    blocks the model holds (:func:`provenance`; ``reference`` names the reference).
    """
    family = family_of(template.config)
    parts = _block_parts(family, init)
    config = config_of_blocks(template.config, [(src.config, i) for src, i in sources])
    for src, _ in sources:
        if family_of(src.config) is not family:
            raise InherituneError(f"cannot mix {src.config.model_type} blocks into a {config.model_type} model")

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=template.dtype)
    for path in (family.embed, family.final_norm, family.head):
        model.get_submodule(path).load_state_dict(template.get_submodule(path).state_dict())
    for optional in (family.pos_embed, *family.extras):  # optional: only some configs have them
        if optional and (found := module(template, optional)) is not None:
            # the model is built from the template's config: it has the part too
            cast(torch.nn.Module, module(model, optional)).load_state_dict(found.state_dict())
    new_blocks = model.get_submodule(family.blocks)
    for new_block, (src, i) in zip(new_blocks, sources, strict=True):
        old_block = blocks(src)[i]
        for part in parts if parts is not None else ("",):
            dst, from_ = (new_block, old_block) if part == "" else (module(new_block, part), module(old_block, part))
            if dst is not None and from_ is not None:
                dst.load_state_dict(from_.state_dict())
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    model.config.inheritune = provenance(sources, reference)
    return model.eval()


def origins(model: PreTrainedModel) -> list[int]:
    """The reference block each of ``model``'s blocks was copied from (its own indices when it
    was not built by inheritune: then it *is* the reference)."""
    record = getattr(model.config, PROVENANCE, None)
    return list(record["blocks"]) if record else list(range(num_layers(model.config)))


def provenance(sources: Sequence[tuple[PreTrainedModel, int]], reference: str | None = None) -> dict:
    """What a built model's config.json records (key ``inheritune``): the reference, its depth, and
    which of its blocks the model holds, in order. Growth, shrinking, model cards and the report's
    strip of kept blocks read it; ``AutoModelForCausalLM`` keeps it as a plain config attribute."""
    first = sources[0][0]
    record = getattr(first.config, PROVENANCE, None) or {}
    return {
        "reference": reference or record.get("reference") or first.config.name_or_path or "unknown",
        "reference_layers": record.get("reference_layers", num_layers(first.config)),
        "blocks": [origins(src)[i] for src, i in sources],
    }


def inherit(
    reference: str | Path | PreTrainedModel,
    layers: int | str | Sequence[int],
    init: Init = "all",
    seed: int = 0,
) -> PreTrainedModel:
    """The Inheritune step in memory: a smaller model made of the reference's chosen blocks
    (a count n: the first n; or explicit indices, e.g. a selector's ``Selection.keep``).
    ``inheritune.derive`` is the command, which chooses by any selector and writes the folder.

    >>> small = inherit("smollm2-135m", layers=15)
    """
    ref = reference if isinstance(reference, PreTrainedModel) else load_model(reference)
    indices = parse_layers(layers, num_layers(ref.config))
    name = None if isinstance(reference, PreTrainedModel) else str(reference)
    return stack_blocks(ref, [(ref, i) for i in indices], init=init, seed=seed, reference=name)


def deepen(
    model: PreTrainedModel,
    reference: PreTrainedModel,
    keep: Sequence[int],
    mode: str = "reference",  # one of GROW_MODES, checked here
) -> PreTrainedModel:
    """Deepen a trained model to hold the reference blocks ``keep`` (sorted; a superset of the
    blocks it holds, e.g. what a selector keeps next), keeping its own trained blocks.

    New blocks sit at their original positions. ``reference`` mode copies them from the reference
    (the paper's growth); ``duplicate`` fills each run of new positions with copies of the model's
    blocks just before it.
    """
    held = origins(model)
    if mode not in GROW_MODES:
        raise InherituneError(f"grow mode must be 'reference' or 'duplicate', not '{mode}'")
    if missing := [i for i in held if i not in keep]:
        raise InherituneError(
            f"deepen: the grown model must keep the model's blocks; reference block {missing[0]} is missing"
        )
    if len(keep) <= len(held):
        raise InherituneError(f"deepen: the step must add at least 1 layer, not {len(keep) - len(held)}")
    sources, run = [], 0
    for i in sorted(keep):
        prefix = sum(1 for h in held if h < i)  # the model's blocks before position i
        if i in held:
            sources.append((model, held.index(i)))
        elif mode == "reference":
            sources.append((reference, i))
        else:
            length = sum(1 for j in keep if j not in held and sum(1 for h in held if h < j) == prefix)
            if length > prefix:
                raise InherituneError(f"cannot duplicate {length} blocks of a {prefix}-block prefix")
            sources.append((model, prefix - length + run))
        run = run + 1 if i not in held else 0
    return stack_blocks(model, sources)


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
    if getattr(model, "hf_device_map", None):
        return pruned
    return pruned.to(model.device)  # type: ignore[arg-type]  # functools.wraps types PreTrainedModel.to unbound

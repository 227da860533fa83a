"""Which parameters heal, and at what learning rate: healing that fits a small budget.

``train_blocks`` names the blocks that train at the full learning rate (with the final norm):

- ``all`` (default): everything trains, as in the paper;
- ``last:K``: the last K blocks (Lu et al. 2024: with little data, tuning the last blocks beats
  elaborate choices);
- ``cuts:K``: the K blocks on each side of every place where the model skips reference blocks
  (the seams a pruned or derived model must mend; a model derived from the first n has one cut,
  at its end). The cuts are read from the model's config (``surgery.provenance``);
- indices like ``0-3,20``.

Everything else (other blocks, embeddings, a tied or untied LM head) trains at ``rest_lr_scale``
times the learning rate; 0 (the default) freezes it: no gradient, no optimizer state, and no
backward pass below the first block that trains.
"""

from __future__ import annotations

from transformers import PretrainedConfig, PreTrainedModel

from inheritune.models.families import family_of, num_layers
from inheritune.models.surgery import PROVENANCE
from inheritune.specs import TrainBlocks


def cuts(config: PretrainedConfig, spec: TrainBlocks) -> list[int]:
    """Positions p where the model skips reference blocks just before block p (p = n: after its last)."""
    record = getattr(config, PROVENANCE, None)
    if not record:
        raise spec.refuse(
            "cuts:K needs a model built by inheritune (derive, grow, prune: its config.json records the "
            "reference blocks it holds); use last:K or indices"
        )
    held, total = list(record["blocks"]), record["reference_layers"]
    found = [p for p in range(1, len(held)) if held[p] != held[p - 1] + 1]
    return ([0] if held[0] != 0 else []) + found + ([len(held)] if held[-1] != total - 1 else [])


def focus(config: PretrainedConfig, spec: TrainBlocks, model: str = "the model") -> set[int] | None:
    """Block positions of a model (its ``config``) that train at the full rate (None: all of it).
    Reads the config alone, so commands run it before they write anything; a spec the model cannot
    take is one line naming the option, the value and ``model``."""
    n = num_layers(config)
    spec.check_depth(n, model)
    if spec.kind == "all":
        return None
    if spec.kind == "last":
        return set(range(n - spec.k, n))
    if spec.kind == "cuts":
        return {p for c in cuts(config, spec) for p in range(c - spec.k, c + spec.k) if 0 <= p < n}
    assert spec.blocks is not None  # kind "list"
    return set(spec.blocks.within(n, model))


def lr_scales(model: PreTrainedModel, spec: TrainBlocks, rest: float) -> dict[str, float]:
    """Learning-rate multiplier per parameter name; parameters at 0 are frozen here
    (``requires_grad`` off) so they cost neither gradients nor optimizer state."""
    blocks = focus(model.config, spec)
    if blocks is None:
        return {name: 1.0 for name, _ in model.named_parameters()}
    family = family_of(model.config)
    inside = (*(f"{family.blocks}.{p}." for p in blocks), f"{family.final_norm}.")
    scales = {name: 1.0 if name.startswith(inside) else rest for name, _ in model.named_parameters()}
    for name, param in model.named_parameters():
        if scales[name] == 0:
            param.requires_grad_(False)
    return scales

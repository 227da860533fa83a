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

from transformers import PreTrainedModel

from inheritune.errors import InherituneError
from inheritune.models.families import family_of, num_layers
from inheritune.models.surgery import PROVENANCE, origins, parse_layers
from inheritune.training.config import check_train_blocks


def cuts(model: PreTrainedModel) -> list[int]:
    """Positions p where the model skips reference blocks just before block p (p = n: after its last)."""
    record = getattr(model.config, PROVENANCE, None)
    if not record:
        raise InherituneError(
            "train_blocks cuts:K needs a model built by inheritune (derive, grow, prune: its "
            "config.json records the reference blocks it holds); use last:K or indices"
        )
    held, total = origins(model), record["reference_layers"]
    found = [p for p in range(1, len(held)) if held[p] != held[p - 1] + 1]
    return ([0] if held[0] != 0 else []) + found + ([len(held)] if held[-1] != total - 1 else [])


def focus(model: PreTrainedModel, spec: str) -> set[int] | None:
    """Block positions that train at the full rate (None: all of the model)."""
    n = num_layers(model.config)
    kind, _, k = check_train_blocks(spec).partition(":")
    if spec == "all":
        return None
    if kind == "last":
        return set(range(max(0, n - int(k)), n))
    if kind == "cuts":
        return {p for c in cuts(model) for p in range(c - int(k), c + int(k)) if 0 <= p < n}
    return set(parse_layers(spec, n))


def lr_scales(model: PreTrainedModel, spec: str, rest: float) -> dict[str, float]:
    """Learning-rate multiplier per parameter name; parameters at 0 are frozen here
    (``requires_grad`` off) so they cost neither gradients nor optimizer state."""
    blocks = focus(model, spec)
    if blocks is None:
        return {name: 1.0 for name, _ in model.named_parameters()}
    family = family_of(model.config)
    inside = (*(f"{family.blocks}.{p}." for p in blocks), f"{family.final_norm}.")
    scales = {name: 1.0 if name.startswith(inside) else rest for name, _ in model.named_parameters()}
    for name, param in model.named_parameters():
        if scales[name] == 0:
            param.requires_grad_(False)
    return scales

"""What a recipe's inputs must be before ``run`` writes anything: every file and model it names
(``check_inputs``, also ``run --check``) and what the reference's config decides of its keys.
Each refusal names its recipe key and value."""

from __future__ import annotations

from collections.abc import Callable

from inheritune.data.shards import open_data
from inheritune.data.sources import check_source
from inheritune.errors import InherituneError
from inheritune.models.families import num_layers
from inheritune.models.gguf_export import layout_of
from inheritune.models.loading import load_config, load_model, load_tokenizer, skeleton, tokenizer_fingerprint
from inheritune.recipe import CORRECTED, Recipe
from inheritune.training.lora import check_targets
from inheritune.training.teacher import check_teacher_states


def load_reference(recipe: Recipe):
    """The reference model and tokenizer; a failure names the recipe key."""
    trust = bool(recipe.train.get("trust_remote_code", False))
    try:
        return load_model(recipe.reference, trust_remote_code=trust), load_tokenizer(recipe.reference, trust)
    except InherituneError as e:
        raise InherituneError(f"recipe key 'reference': {e}") from None


def check_fit(recipe: Recipe, reference, tokenizer) -> None:
    """What the reference decides about the recipe (its depth, its tokenizer against a prepared
    data folder), checked before anything is written, naming the recipe key."""
    recipe.grow.check_depth(num_layers(reference.config), recipe.reference, name=lambda key: f"recipe key 'grow.{key}'")
    if recipe.data.dir is not None:
        open_data(recipe.data.dir).check_tokenizer(
            tokenizer_fingerprint(tokenizer), f"the reference {recipe.reference} (recipe key 'data.dir')"
        )


def _named(key: str, value: str, check: Callable):
    """``check()``, its one-line error prefixed with the recipe key and value it concerns."""
    try:
        return check()
    except InherituneError as e:
        raise InherituneError(f"recipe key '{key}' ({value}): {e}") from None


def check_inputs(recipe: Recipe) -> list[str]:
    """Every input the recipe names, checked without loading weights (``run`` before it creates
    anything, ``run --check`` alone): the data, the reference's tokenizer, a prepared folder's
    tokenizer and each teacher's. Returns one line per check made."""
    trust = bool(recipe.train.get("trust_remote_code", False))
    if (folder := recipe.data.dir) is not None:
        data = _named("data.dir", folder, lambda: open_data(folder))
        checked = [f"data.dir {recipe.data.dir}: a prepared folder ({data.num_tokens('val'):,} val tokens)"]
    else:
        for source in recipe.data.sources:
            _named("data.sources", source, lambda source=source: check_source(source))
        checked = [f"data.sources {', '.join(recipe.data.sources)}: found"]
    tok = _named("reference", recipe.reference, lambda: load_tokenizer(recipe.reference, trust))
    fingerprint = tokenizer_fingerprint(tok)
    checked.append(f"reference {recipe.reference}: its tokenizer loads")
    if recipe.data.dir is not None:
        _named(
            "data.dir", recipe.data.dir, lambda: data.check_tokenizer(fingerprint, f"the reference {recipe.reference}")
        )
        checked.append("data.dir: tokenized with the reference's tokenizer")
    checked.append(_check_specs(recipe, trust))
    teacher = recipe.distill.teacher
    if (recipe.distill.enabled or recipe.arms.other_loss) and teacher not in ("reference", CORRECTED, recipe.reference):
        theirs = _named("distill.teacher", teacher, lambda: tokenizer_fingerprint(load_tokenizer(teacher, trust)))
        if theirs != fingerprint:
            raise InherituneError(
                f"recipe key 'distill.teacher' ({teacher}): its tokenizer differs from the "
                f"reference {recipe.reference}'s; distillation needs one vocabulary"
            )
        checked.append(f"distill.teacher {teacher}: its tokenizer is the reference's")
    return checked


def _check_specs(recipe: Recipe, trust: bool) -> str:
    """The selector, the trained blocks, LoRA's targets and top:K against the reference's config (no weights) and the
    depths the arms take: each refusal names its recipe key, its value and the model."""
    config = _named("reference", recipe.reference, lambda: load_config(recipe.reference, trust))
    layers = num_layers(config)
    if recipe.export.gguf is not None:  # the main arm is the reference's family, cut: the same layout
        _named("export.gguf", recipe.export.gguf, lambda: layout_of(config))
    g = recipe.grow
    deepest = g.check_depth(layers, recipe.reference, name=lambda key: f"recipe key 'grow.{key}'")
    last = deepest if g.direction == "grow" else g.min_layers
    recipe.inherit.by.check(layers, [g.start_layers, last], f"the reference {recipe.reference}")
    shallowest = min(g.start_layers, last)
    if (blocks := recipe.train.get("train_blocks")) is not None:
        blocks.check_depth(shallowest, f"the {shallowest}-layer arms")
    if recipe.train.get("lora") and (targets := recipe.train.get("lora_targets")) is not None:
        check_targets(skeleton(config, trust), targets)  # the arms are the reference's blocks: its module names
    teacher = recipe.reference if recipe.distill.teacher in ("reference", CORRECTED) else recipe.distill.teacher
    if (states := recipe.train.get("teacher_states")) is not None and (
        recipe.distill.enabled or recipe.arms.other_loss
    ):
        check_teacher_states(states, teacher, trust)
    return f"inherit.by {recipe.inherit.by} and the train blocks fit the reference's {layers} blocks"

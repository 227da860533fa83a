"""Model cards: every model folder inheritune writes carries a README.md the hub reads.

The front matter names the base model (the reference, as a hub id where one is known),
``library_name: transformers`` and tags; the body says which reference blocks the model holds
(read from its config.json's ``inheritune`` record, see ``surgery.provenance``) and what the
writing command did (selector, loss, tokens, val loss), as mergekit does for merges.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from inheritune.atomic import atomic_write_text, final_paths
from inheritune.models.model_source import ALIASES

CARD = "README.md"  # save_model writes the same name


def base_model(reference: str) -> str | None:
    """The hub id a model comes from: an alias's source model; a model folder's own card's
    ``base_model`` (so a chain derive -> train -> prune keeps it); or the name itself when it looks
    like a hub id."""
    if reference in ALIASES:
        return ALIASES[reference].hub_id
    card = Path(reference) / CARD
    if card.is_file():
        text = card.read_text(encoding="utf-8")
        if text.startswith("---\n") and "\n---" in text[4:]:
            front = yaml.safe_load(text[4 : text.index("\n---", 4)]) or {}
            found = front.get("base_model") if isinstance(front, dict) else None
            return str(found) if found else None
        return None
    looks_like_hub = reference.count("/") == 1 and not Path(reference).exists() and not reference.startswith((".", "/"))
    return reference if looks_like_hub else None


def card_text(record: dict | None, facts: dict, source: str) -> str:
    """The card: front matter, then what the folder holds and how it was made. ``source`` is the
    model the command started from; ``facts["command"]`` names the command. Every command writes
    the same fields: base_model (when a hub id is known), library_name, tags, the blocks held (for
    a model built from a reference's blocks), the source and the facts."""
    command = str(facts.get("command", "inheritune"))
    front: dict = {"library_name": "transformers", "tags": ["inheritune", f"inheritune-{command}"]}
    hub = (base_model(str(record["reference"])) if record else None) or base_model(source)
    if hub:
        front["base_model"] = hub
    lines = ["# Model made with inheritune", ""]
    if record:
        blocks = record["blocks"]
        lines += [
            f"Holds {len(blocks)} of the {record['reference_layers']} blocks of `{record['reference']}`, "
            f"in this order: `{', '.join(map(str, blocks))}` (reference block indices; embeddings, final norm "
            "and LM head are the reference's).",
            "",
        ]
    lines += [f"- made from: {source}"] + [f"- {key}: {value}" for key, value in facts.items()]
    lines += ["", "Loads with `AutoModelForCausalLM.from_pretrained(folder)`; inheritune is not needed."]
    return "---\n" + yaml.safe_dump(front, sort_keys=True) + "---\n\n" + "\n".join(lines) + "\n"


def write_card(folder: str | Path, facts: dict, source: str) -> Path:
    """Write ``folder/README.md`` for the model folder, from its config.json, the model it was made
    from and the command's facts."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    text = card_text(config.get("inheritune"), final_paths(facts), final_paths(source))  # paths as after a swap
    atomic_write_text(folder / CARD, text)
    return folder / CARD

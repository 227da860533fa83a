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
from inheritune.models.loading import ALIASES

CARD = "README.md"  # save_model writes the same name


def base_model(reference: str) -> str | None:
    """The hub id of a reference: an alias's source model, or the name itself when it looks like a hub id."""
    if reference in ALIASES:
        return ALIASES[reference].hub_id
    looks_like_hub = reference.count("/") == 1 and not Path(reference).exists() and not reference.startswith((".", "/"))
    return reference if looks_like_hub else None


def card_text(record: dict | None, facts: dict) -> str:
    """The card: front matter, then what the folder holds and how it was made."""
    front = {
        "library_name": "transformers",
        "tags": ["inheritune", "layer-pruning" if record else "inheritune-trained"],
    }
    lines = ["# Model made with inheritune", ""]
    if record:
        if hub := base_model(str(record["reference"])):
            front["base_model"] = hub
        blocks = record["blocks"]
        lines += [
            f"Holds {len(blocks)} of the {record['reference_layers']} blocks of `{record['reference']}`, "
            f"in this order: `{', '.join(map(str, blocks))}` (reference block indices; embeddings, final norm "
            "and LM head are the reference's).",
            "",
        ]
    lines += [f"- {key}: {value}" for key, value in facts.items()]
    lines += ["", "Loads with `AutoModelForCausalLM.from_pretrained(folder)`; inheritune is not needed."]
    return "---\n" + yaml.safe_dump(front, sort_keys=True) + "---\n\n" + "\n".join(lines) + "\n"


def write_card(folder: str | Path, facts: dict) -> Path:
    """Write ``folder/README.md`` for the model folder, from its config.json and the command's facts."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    atomic_write_text(folder / CARD, card_text(config.get("inheritune"), final_paths(facts)))  # paths as after a swap
    return folder / CARD

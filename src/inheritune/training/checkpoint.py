"""Checkpoints: RUN/checkpoints/step-NNNNNNN/ = HF model folder + trainer_state.pt, written atomically.

A checkpoint folder appears in one rename once complete (``atomic_dir``), so a kill at any
moment leaves either the previous checkpoints or the new one, never half of one. An old one is
deleted the same way round: renamed to a hidden name first (``io.discard``), so a kill mid-deletion
never leaves a ``step-NNNNNNN/`` without its trainer state. Resuming still checks each candidate and
falls back to an older one if a file was damaged later.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from inheritune.atomic import atomic_dir
from inheritune.errors import InherituneError
from inheritune.leftovers import clean_leftovers, discard

STATE = "trainer_state.pt"


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def save(run_dir: Path, step: int, model, tokenizer, state: dict, keep: int, model_state: dict | None = None) -> Path:
    """Write one checkpoint, then delete all but the newest ``keep``.

    ``model_state`` is the full state dict when the live model is sharded (FSDP2).
    """
    out = checkpoint_dir(run_dir) / f"step-{step:07d}"
    with atomic_dir(out, overwrite=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True, state_dict=model_state)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        torch.save(state, tmp / STATE)
    for old in sorted(checkpoint_dir(run_dir).glob("step-*"))[:-keep]:
        discard(old)
    return out


def weights(folder: Path) -> dict[str, torch.Tensor]:
    """The model tensors of an HF folder (one or several safetensors files)."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise InherituneError(f"{folder} has no safetensors weights")
    tensors: dict[str, torch.Tensor] = {}
    for f in files:
        tensors.update(load_file(f))
    return tensors


def load_into(model: torch.nn.Module, tensors: dict[str, torch.Tensor], where: Path) -> None:
    """Copy saved tensors into ``model``; only weights tied to a saved one may be absent."""
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    names = dict(model.named_parameters(remove_duplicate=False))
    untied = [k for k in missing if not any(names[a] is names.get(k) for a in tensors if a in names)]
    if unexpected or untied:
        raise InherituneError(
            f"checkpoint {where} does not fit the model (missing {untied[:3]}, unexpected {unexpected[:3]})"
        )


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint that loaded: its folder, the trainer's state (step, optimizer, RNG, history) and the weights."""

    folder: Path
    state: dict[str, Any]
    weights: dict[str, torch.Tensor]


def latest(run_dir: Path) -> Checkpoint | None:
    """The newest checkpoint that loads; corrupt ones are reported and skipped."""
    for folder in sorted(checkpoint_dir(run_dir).glob("step-*"), reverse=True):
        try:
            state = torch.load(folder / STATE, map_location="cpu", weights_only=True)
            return Checkpoint(folder, state, weights(folder))
        except Exception as e:
            detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            print(f"inheritune: warning: skipping corrupt checkpoint {folder}: {detail[:200]}", file=sys.stderr)
    return None


def clean_partial(run_dir: Path) -> None:
    """Remove what a killed run left among its checkpoints: ones it was writing (never renamed into
    place) and ones it was deleting (renamed away first). ``latest`` never looks at either."""
    clean_leftovers(checkpoint_dir(run_dir))

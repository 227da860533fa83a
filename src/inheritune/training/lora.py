"""LoRA healing through peft: low-rank adapters on a model's linear layers, the rest frozen.

Full fine-tuning with AdamW holds about 16 bytes per parameter (weights, gradients, two moments);
with adapters only they are trained, so a reference too big to train in full still heals on one
device. ``add_adapters`` injects them into the model in place (its modules keep their names, so
the loss, checkpoints and resumption see the same model); ``save`` folds them into plain
weights (``merge``) or saves the untouched base and the adapters apart.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import peft
import torch
from transformers import PreTrainedModel

from inheritune.models.loading import ADAPTERS
from inheritune.specs import LoraTargets


@dataclass
class Adapters:
    """The peft wrapper around the model whose linear layers hold adapters."""

    wrapper: peft.PeftModel

    @property
    def model(self) -> PreTrainedModel:
        """The model itself, adapters inside: what trains, evaluates and is checkpointed."""
        return cast(PreTrainedModel, self.wrapper.base_model.model)

    def trainable(self) -> int:
        return sum(p.numel() for p in self.wrapper.parameters() if p.requires_grad)

    def save(self, folder: Path, merge: bool) -> None:
        """The final model in ``folder``: the adapters merged into its weights, or the untouched base
        there and the adapters in ``folder/adapter`` (peft's format; ``load_model`` of the folder merges
        them back). Either way the layers are plain after."""
        if merge:
            cast(PreTrainedModel, self.wrapper.merge_and_unload()).save_pretrained(folder, safe_serialization=True)
            return
        self.wrapper.save_pretrained(str(folder / ADAPTERS), safe_serialization=True)
        cast(PreTrainedModel, self.wrapper.unload()).save_pretrained(folder, safe_serialization=True)


def add_adapters(model: PreTrainedModel, rank: int, targets: LoraTargets, seed: int) -> Adapters:
    """Rank-``rank`` adapters (alpha 2 x rank, no dropout) on ``targets``: all-linear (every linear layer
    but the LM head) or module names (e.g. q_proj,v_proj). Their random half is drawn from ``seed``
    alone, so one process, several ranks and a teacher cache all start alike."""
    check_targets(model, targets)
    modules: str | list[str] = list(targets.names) if targets.names else "all-linear"
    config = peft.LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=modules, bias="none")
    try:
        with torch.random.fork_rng(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)  # peft's call
            torch.manual_seed(seed)
            wrapper = peft.get_peft_model(model, config)
    except ValueError as e:  # peft: "Target modules {...} not found in the base model"
        raise targets.refuse(str(e).splitlines()[0]) from None
    return Adapters(wrapper)


def check_targets(model: PreTrainedModel, targets: LoraTargets) -> None:
    """Every named target is a module of ``model``, and none is an embedding or the LM head: the loss
    reads the head's weight itself (an adapter there would never train), and with tied embeddings
    merging an adapter on one would change the other. Adapters go on the blocks' layers."""
    embeddings = {id(model.get_input_embeddings()), id(model.get_output_embeddings())}
    modules = dict(model.named_modules())
    for target in targets.names or ():
        found = [name for name in modules if name == target or name.endswith(f".{target}")]
        if not found:
            raise targets.refuse(f"{model.config.model_type} has no module named {target}")
        if ends := [name for name in found if id(modules[name]) in embeddings]:
            raise targets.refuse(f"{ends[0]} is an embedding or the LM head; adapters go on the blocks' layers")

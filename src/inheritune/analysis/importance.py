"""Which heads and FFNs a model needs: gradient head importance and FFN knock-outs.

Head importance follows Michel et al. (2019), as in the OPT-66B study: every head's output is
scaled by a mask variable xi_h = 1 (``hooks.head_mask``), and a head's importance is the mean
over examples of |dL/dxi_h|, where L is the example's mean next-token loss on its scored tokens
(every token of a language-modelling window; only the answer of a few-shot task prompt). A head
whose output cannot change the loss gets exactly 0.

FFN importance is the loss increase (and, for tasks, the accuracy drop) when one layer's FFN
output is removed (``hooks.ffn_knockout``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from inheritune.analysis.hooks import ffn_knockout, head_mask
from inheritune.models.families import family_of, num_heads, num_layers

THIRDS = ("early", "middle", "late")


@dataclass(frozen=True)
class Example:
    """One scored sequence: the loss is on predicting ``ids[start:]``.

    ``choices`` are the single-token answer options of a multiple-choice prompt (empty when
    accuracy cannot be read off one next-token distribution) and ``answer`` the right one's index.
    """

    ids: torch.Tensor  # [T] token ids
    start: int
    choices: tuple[int, ...] = ()
    answer: int = -1


def lm_examples(windows: torch.Tensor) -> list[Example]:
    """Language-modelling windows ``[N, T]``: every token after the first is scored."""
    return [Example(w, 1) for w in windows]


def task_examples(tokenizer, pairs: list[tuple[str, str]], max_len: int,
                  options: tuple[str, ...] = (" A", " B", " C", " D")) -> list[Example]:
    """Few-shot (prompt, answer) pairs scored on the answer tokens only.

    Prompts longer than ``max_len`` lose their oldest tokens, so the question and answer stay.
    Accuracy is read from the next-token distribution when every option is one distinct token.
    """
    option_ids = [tokenizer.encode(o, add_special_tokens=False) for o in options]
    single = all(len(o) == 1 for o in option_ids) and len({o[0] for o in option_ids}) == len(options)
    firsts = [o[0] for o in option_ids] if single else []
    examples = []
    for prompt, answer in pairs:
        p = tokenizer.encode(prompt)
        a = tokenizer.encode(answer, add_special_tokens=False)
        ids = (p + a)[-max(max_len, len(a) + 1):]
        scorable = len(a) == 1 and a[0] in firsts
        choices, index = (tuple(firsts), firsts.index(a[0])) if scorable else ((), -1)
        examples.append(Example(torch.tensor(ids), len(ids) - len(a), choices, index))
    return examples


def example_loss(model: PreTrainedModel, ex: Example) -> tuple[torch.Tensor, bool | None]:
    """Mean NLL on the scored tokens, and whether the model's top option is the right one."""
    logits = model(input_ids=ex.ids[None].to(model.device)).logits[0].float()
    targets = ex.ids[ex.start:].to(logits.device)
    loss = F.cross_entropy(logits[ex.start - 1:-1], targets)
    correct = None
    if ex.choices:
        correct = int(logits[ex.start - 1, list(ex.choices)].argmax()) == ex.answer
    return loss, correct


@torch.no_grad()
def evaluate(model: PreTrainedModel, examples: list[Example]) -> dict:
    """Mean loss over examples, and accuracy where the examples have single-token options."""
    losses, hits = [], []
    for ex in examples:
        loss, correct = example_loss(model, ex)
        losses.append(loss.item())
        if correct is not None:
            hits.append(correct)
    return {"loss": float(np.mean(losses)), "accuracy": float(np.mean(hits)) if hits else None}


def head_importance(model: PreTrainedModel, examples: list[Example]) -> np.ndarray:
    """``[layers, heads]``: mean over examples of |dL/dxi_h| (one backward pass per example)."""
    mask = torch.ones(num_layers(model.config), num_heads(model.config), requires_grad=True)
    total = torch.zeros_like(mask)
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in frozen:
        p.requires_grad_(False)  # only the mask needs a gradient: saves the weight gradients
    try:
        with head_mask(model, mask):
            for ex in examples:
                loss, _ = example_loss(model, ex)
                (grad,) = torch.autograd.grad(loss, mask)
                total += grad.abs()
    finally:
        for p, flag in frozen:
            p.requires_grad_(flag)
    return (total / max(len(examples), 1)).numpy()


def ffn_importance(model: PreTrainedModel, examples: list[Example], base: dict | None = None) -> dict:
    """Per layer: loss increase (and accuracy drop, when known) with that layer's FFN removed."""
    base = base or evaluate(model, examples)
    loss_up, acc_drop = [], []
    for layer in range(num_layers(model.config)):
        with ffn_knockout(model, [layer]):
            knocked = evaluate(model, examples)
        loss_up.append(knocked["loss"] - base["loss"])
        if base["accuracy"] is not None:
            acc_drop.append(base["accuracy"] - knocked["accuracy"])
    return {"loss_increase": loss_up, "accuracy_drop": acc_drop or None}


def third_of(layer: int, layers: int) -> str:
    """Early, middle or late third of the depth."""
    return THIRDS[min(2, 3 * layer // layers)]


def clusters(scores: np.ndarray, top_share: float = 0.2) -> dict:
    """Where the most important units sit: of the top ``top_share`` units (heads or FFN layers),
    how many fall in each third of the depth, each third's share of the total importance, and
    the third holding most of the top units (``peak``).
    """
    scores = np.asarray(scores, dtype=float)
    per_layer = scores.reshape(scores.shape[0], -1)
    layers = per_layer.shape[0]
    flat = per_layer.ravel()
    k = max(1, round(top_share * flat.size))
    top = np.argsort(-flat, kind="stable")[:k]
    top_count = {t: 0 for t in THIRDS}
    for index in top:
        top_count[third_of(index // per_layer.shape[1], layers)] += 1
    mass = {t: 0.0 for t in THIRDS}
    positive = np.clip(per_layer, 0, None)
    for layer in range(layers):
        mass[third_of(layer, layers)] += float(positive[layer].sum())
    total = sum(mass.values()) or 1.0
    return {"top_units": k, "top_count": top_count, "mass_share": {t: m / total for t, m in mass.items()},
            "peak": max(THIRDS, key=lambda t: top_count[t])}


def analyse(model: PreTrainedModel, examples: list[Example]) -> dict:
    """Head and FFN importance of one example source, with where each clusters."""
    family_of(model.config)  # an unknown architecture fails here, in one line
    model.eval()
    base = evaluate(model, examples)
    heads = head_importance(model, examples)
    ffn = ffn_importance(model, examples, base)
    return {
        "examples": len(examples),
        "loss": base["loss"],
        "accuracy": base["accuracy"],
        "head_importance": heads.tolist(),
        "ffn_loss_increase": ffn["loss_increase"],
        "ffn_accuracy_drop": ffn["accuracy_drop"],
        "clusters": {"heads": clusters(heads), "ffn": clusters(np.asarray(ffn["loss_increase"]))},
    }

"""Which heads and FFNs a model needs: gradient head importance and FFN knock-outs.

Head importance follows Michel et al. (2019), as in the OPT-66B study: every head's output is
scaled by a mask variable xi_h = 1, and a head's importance is the mean over examples of
|dL/dxi_h|, where L is the example's mean next-token loss on its scored tokens (every token of a
language-modelling window; only the answer of a few-shot task prompt). A head whose output cannot
change the loss gets exactly 0.

FFN importance is the loss increase (and, for tasks, the accuracy drop) when one layer's FFN
output is removed.

Both are batched without changing a number:

- Examples of different lengths share a forward pass **right-padded**: under causal attention a
  real token never sees the padding after it, so no attention mask or position shift is needed
  and every family computes exactly the unpadded logits.
- Head importance needs each example's own |dL_i/dxi| (the mean of absolute values is not the
  absolute value of a sum), so each example in a batch gets its **own mask row** xi[i]: the
  batch's summed loss then has d(sum)/dxi[i] = dL_i/dxi[i], one backward pass per batch.
- An FFN knock-out of layer l changes nothing before layer l, so the knock-outs of one example
  **share their prefix**: entering block l, the intact row is copied and the copy's FFN output is
  zeroed. One forward pass carries the intact row plus one row per knocked-out layer, and costs
  about half of one forward pass per layer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, cast

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from inheritune.analysis import batching
from inheritune.analysis.hooks import head_mask, hooks
from inheritune.models.families import blocks, family_of, num_heads, num_layers

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


class TaskPrompt(Protocol):
    """A few-shot prompt (``evaluation.suite.Prompt``): the answer is one of the options."""

    @property
    def text(self) -> str: ...
    @property
    def answer(self) -> str: ...
    @property
    def options(self) -> tuple[str, ...]: ...


def lm_examples(windows: torch.Tensor) -> list[Example]:
    """Language-modelling windows ``[N, T]``: every token after the first is scored."""
    return [Example(w, 1) for w in windows]


def task_examples(tokenizer, prompts: Sequence[TaskPrompt], max_len: int) -> list[Example]:
    """Few-shot prompts scored on the answer tokens only.

    Prompts longer than ``max_len`` lose their oldest tokens, so the question and answer stay.
    Accuracy is read from the next-token distribution when every option of the prompt is one
    distinct token (any number of options).
    """
    examples = []
    for prompt in prompts:
        option_ids = [tokenizer.encode(o, add_special_tokens=False) for o in prompt.options]
        firsts = [o[0] for o in option_ids if len(o) == 1]
        single = len(firsts) == len(option_ids) and len(set(firsts)) == len(firsts)
        p = tokenizer.encode(prompt.text)
        a = tokenizer.encode(prompt.answer, add_special_tokens=False)
        ids = (p + a)[-max(max_len, len(a) + 1) :]
        scorable = single and len(a) == 1 and a[0] in firsts
        choices, index = (tuple(firsts), firsts.index(a[0])) if scorable else ((), -1)
        examples.append(Example(torch.tensor(ids), len(ids) - len(a), choices, index))
    return examples


def padded_tokens(examples: Sequence[Example]) -> int:
    """Tokens of the examples' right-padded batch."""
    return len(examples) * max(len(ex.ids) for ex in examples)


def token_bytes(model: PreTrainedModel, length: int, backward: bool) -> int:
    """Planned bytes per padded token of a batch of ``length``-token examples.

    A forward pass holds one block's activations at a time and the fp32 logits (with their
    log-softmax); a backward pass keeps every block's activations (about twice its parameter
    count per hidden unit, plus one attention row per head) and the logits' gradient too. Rough
    by design: ``batching.Batcher`` halves the batch if it is still too big.
    """
    vocab = model.get_output_embeddings().weight.shape[0]
    hidden = cast(torch.Tensor, model.get_input_embeddings().weight).shape[1]
    block = sum(p.numel() for p in blocks(model)[0].parameters())
    per_layer = 2 * block // hidden + num_heads(model.config) * length
    if backward:
        return 4 * (3 * vocab + num_layers(model.config) * per_layer)
    return 4 * (2 * vocab + per_layer)


def batch_tokens(model: PreTrainedModel, examples: Sequence[Example], backward: bool) -> int:
    """Padded tokens per batch that fit the memory budget (at least one example's worth)."""
    longest = max((len(ex.ids) for ex in examples), default=1)
    return max(longest, batching.budget(model) // token_bytes(model, longest, backward))


def batched(
    model: PreTrainedModel,
    examples: Sequence[Example],
    run,
    what: str,
    tokens: int | None = None,
    backward: bool = False,
):
    """``run(batch)`` over consecutive batches of at most ``tokens`` padded tokens (default: what
    the memory budget allows), with a progress bar; see ``batching.Batcher``."""
    batcher = batching.Batcher(tokens or batch_tokens(model, examples, backward), what)
    return batcher.pieces(examples, padded_tokens, run, unit="example")


def scored_losses(
    model: PreTrainedModel, rows: torch.Tensor, examples: Sequence[Example]
) -> tuple[torch.Tensor, list[bool | None]]:
    """Each row's mean NLL on its example's scored tokens, and whether its top option is right.

    ``rows`` are right-padded ids ``[R, T]``; row r is scored as ``examples[r]``. Only the logits
    of scored positions are computed (``logits_to_keep``): a task prompt needs one or two of its
    thousand positions.
    """
    keep = rows.shape[1] - min(ex.start for ex in examples) + 1
    offset = rows.shape[1] - keep
    logits = model(input_ids=rows.to(model.device), logits_to_keep=keep, use_cache=False).logits.float()
    losses, correct = [], []
    for r, ex in enumerate(examples):
        scored = logits[r, ex.start - 1 - offset : len(ex.ids) - 1 - offset]
        losses.append(F.cross_entropy(scored, ex.ids[ex.start :].to(scored.device)))
        correct.append(int(scored[0, list(ex.choices)].argmax()) == ex.answer if ex.choices else None)
    return torch.stack(losses), correct


def padded(examples: Sequence[Example]) -> torch.Tensor:
    """``[B, T]`` ids, right-padded with token 0 (never attended to: it follows every real token)."""
    rows = torch.zeros(len(examples), max(len(ex.ids) for ex in examples), dtype=torch.long)
    for r, ex in enumerate(examples):
        rows[r, : len(ex.ids)] = ex.ids
    return rows


def summary(losses: Sequence[float], correct: Sequence[bool | None]) -> dict:
    """Mean loss, and accuracy over the examples that have single-token options."""
    hits = [c for c in correct if c is not None]
    return {"loss": float(np.mean(losses)), "accuracy": float(np.mean(hits)) if hits else None}


@torch.no_grad()
def per_example(
    model: PreTrainedModel, examples: Sequence[Example], tokens: int | None = None
) -> tuple[list[float], list[bool | None]]:
    """Every example's loss and whether its top option is right (None: no single-token options),
    in batches of at most ``tokens`` padded tokens (default: the memory budget's)."""
    losses, correct = [], []

    def run(batch):
        loss, hits = scored_losses(model, padded(batch), batch)
        return loss.tolist(), hits

    for loss, hits in batched(model, examples, run=run, what="scoring", tokens=tokens):
        losses += loss
        correct += hits
    return losses, correct


def evaluate(model: PreTrainedModel, examples: list[Example], tokens: int | None = None) -> dict:
    """Mean loss over examples, and accuracy where the examples have single-token options."""
    return summary(*per_example(model, examples, tokens))


@contextmanager
def frozen_weights(model: PreTrainedModel) -> Iterator[None]:
    """No weight gradients inside (only the mask needs one): saves their memory and time."""
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in frozen:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in frozen:
            p.requires_grad_(flag)


def head_importance(model: PreTrainedModel, examples: list[Example], tokens: int | None = None) -> np.ndarray:
    """``[layers, heads]``: mean over examples of |dL/dxi_h| (one backward pass per batch of at
    most ``tokens`` padded tokens; default: the memory budget's)."""
    shape = (num_layers(model.config), num_heads(model.config))

    def run(batch):
        mask = torch.ones(len(batch), *shape, requires_grad=True)
        with head_mask(model, mask):
            losses, _ = scored_losses(model, padded(batch), batch)
            (grad,) = torch.autograd.grad(losses.sum(), mask)
        return grad.abs().sum(0)

    total = torch.zeros(shape)
    with frozen_weights(model):
        for grads in batched(model, examples, run=run, what="head importance", tokens=tokens, backward=True):
            total += grads
    return (total / max(len(examples), 1)).numpy()


@contextmanager
def branching_knockouts(model: PreTrainedModel, layers: Sequence[int]) -> Iterator[None]:
    """Inside, a forward pass of one sequence (batch 1) returns ``1 + len(layers)`` rows: the
    intact model, then the model with each of ``layers``' FFN output zeroed, in that order.

    Entering each block of ``layers``, the intact row (row 0) is copied to the end of the batch;
    that block's FFN output is zeroed for the copy only. The rows share everything before their
    knocked-out layer. Batch 1 keeps the blocks' other inputs (rotary tables, masks) broadcastable
    to the growing batch.
    """
    family = family_of(model.config)
    chosen = [blocks(model)[layer] for layer in layers]
    rows = [1]  # rows in the block being run

    def branch(_module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        hidden = torch.cat([hidden, hidden[:1]])
        rows[0] = hidden.shape[0]
        return ((hidden, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": hidden})

    def zero_last(_module, _args, out):
        shaped = out.reshape(rows[0], -1, out.shape[-1])  # some FFNs (OPT's) see [rows * T, hidden]
        return torch.cat([shaped[:-1], torch.zeros_like(shaped[-1:])]).reshape(out.shape)

    with hooks(
        pre=[(block, branch) for block in chosen],
        post=[(block.get_submodule(family.ffn_out), zero_last) for block in chosen],
        pre_with_kwargs=True,
    ):
        yield


def row_bytes(model: PreTrainedModel, ex: Example) -> int:
    """Planned bytes of one knock-out row: its scored logits and their log-softmax, in fp32."""
    return 2 * 4 * (len(ex.ids) - ex.start + 1) * model.get_output_embeddings().weight.shape[0]


@torch.no_grad()
def knockout_losses(
    model: PreTrainedModel, ex: Example, batcher: batching.Batcher
) -> tuple[tuple[float, bool | None], list[tuple[float, bool | None]]]:
    """One example's (loss, correct) intact and with each layer's FFN knocked out, in layer order.

    As many layers share a pass as their rows fit in the batcher's byte limit; every pass also
    carries the intact row.
    """
    size = row_bytes(model, ex)

    def run(group: range) -> list[tuple[float, bool | None]]:
        with branching_knockouts(model, group):
            losses, correct = scored_losses(model, ex.ids[None], [ex] * (1 + len(group)))
        return list(zip(losses.tolist(), correct, strict=True))

    intact: tuple[float, bool | None] | None = None
    knocked: list[tuple[float, bool | None]] = []
    for rows in batcher.pieces(range(num_layers(model.config)), lambda group: size * (1 + len(group)), run):
        intact = rows[0] if intact is None else intact
        knocked += rows[1:]
    assert intact is not None  # every pass carries the intact row, and a model has at least one layer
    return intact, knocked


def ffn_importance(model: PreTrainedModel, examples: list[Example], limit: int | None = None) -> dict:
    """Per layer: loss increase (and accuracy drop, when known) with that layer's FFN removed;
    with the intact model's ``loss`` and ``accuracy``. One pass holds at most ``limit`` bytes of
    rows (default: the memory budget)."""
    batcher = batching.Batcher(limit or batching.budget(model), "FFN knock-outs")
    intact, knocked = [], []
    for ex in tqdm(examples, desc="FFN knock-outs", unit="example", disable=None, leave=False):
        intact_row, rows = knockout_losses(model, ex, batcher)
        intact.append(intact_row)
        knocked.append(rows)
    base = summary(*zip(*intact, strict=True))
    per_layer = [
        summary(*zip(*(rows[layer] for rows in knocked), strict=True)) for layer in range(num_layers(model.config))
    ]
    return {
        "loss": base["loss"],
        "accuracy": base["accuracy"],
        "loss_increase": [k["loss"] - base["loss"] for k in per_layer],
        "accuracy_drop": None if base["accuracy"] is None else [base["accuracy"] - k["accuracy"] for k in per_layer],
    }


def third_of(layer: int, layers: int) -> str:
    """Early, middle or late third of the depth."""
    return THIRDS[min(2, 3 * layer // layers)]


def clusters(scores: np.ndarray, top_share: float = 0.2) -> dict:
    """Where the most important units sit, by count and by importance mass.

    Of the top ``top_share`` units (heads or FFN layers): how many fall in each third of the depth
    (``top_count``) and the third holding most of them (``peak``); of all the (non-negative)
    importance, each third's and each layer's share (``mass_share``, ``layer_mass_share``). A few
    dominant units show in the mass, not in the count.
    """
    per_layer = np.asarray(scores, dtype=float).reshape(np.shape(scores)[0], -1)
    layers = per_layer.shape[0]
    flat = per_layer.ravel()
    k = max(1, round(top_share * flat.size))
    top_count = dict.fromkeys(THIRDS, 0)
    for index in np.argsort(-flat, kind="stable")[:k]:
        top_count[third_of(index // per_layer.shape[1], layers)] += 1
    layer_mass = np.clip(per_layer, 0, None).sum(1)
    layer_share = layer_mass / (layer_mass.sum() or 1.0)
    mass = dict.fromkeys(THIRDS, 0.0)
    for layer, share in enumerate(layer_share):
        mass[third_of(layer, layers)] += float(share)
    return {
        "top_units": k,
        "top_count": top_count,
        "mass_share": mass,
        "layer_mass_share": layer_share.tolist(),
        "peak": max(THIRDS, key=lambda t: top_count[t]),
    }


def measure_importance(model: PreTrainedModel, examples: list[Example]) -> dict:
    """Head and FFN importance of one example source, with where each clusters."""
    family_of(model.config)  # an unknown architecture fails here, in one line
    model.eval()
    heads = head_importance(model, examples)
    ffn = ffn_importance(model, examples)
    return {
        "examples": len(examples),
        "loss": ffn["loss"],
        "accuracy": ffn["accuracy"],
        "head_importance": heads.tolist(),
        "ffn_loss_increase": ffn["loss_increase"],
        "ffn_accuracy_drop": ffn["accuracy_drop"],
        "clusters": {"heads": clusters(heads), "ffn": clusters(np.asarray(ffn["loss_increase"]))},
    }

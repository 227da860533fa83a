"""Induction heads: prefix matching and copying, on random token sequences repeated several times.

A segment of ``seg_len`` distinct random tokens is repeated ``repeats`` times (after an optional
BOS). For a query token in repeats 2..R:

- **prefix matching** = the attention the head pays to the tokens right after the earlier
  occurrences of the query token (summed over those occurrences; in repeat 2 that is just the
  previous one);
- **copying** = how much the head's own output raises the logit of the token it should copy
  (the token after the previous occurrence), measured on the real residual stream: with ``r``
  the residual entering the final norm and ``c`` the head's write into it (its output through
  its slice of the attention output projection),
  ``score = (norm(r) - norm(r - c)) . (U[t] - mean_v U[v])`` with ``U`` the unembedding, i.e.
  the head's direct effect on the attended token's logit relative to the average logit.

Both are averaged over query positions and over seeds (one sequence per seed).

Token choice: the source excludes the most and least frequent 4% of the vocabulary. No frequency
table ships with a model, so the proxy here is the id order of BPE vocabularies, which is the
merge order (low ids: bytes and the earliest, most frequent merges; high ids: the rarest merges):
the lowest and highest 4% of ids, and the special tokens, are excluded.
"""

from __future__ import annotations

from typing import cast

import numpy as np
import torch
from transformers import PreTrainedModel

from inheritune.analysis import batching
from inheritune.analysis.hooks import attention_probs, final_residual, head_outputs
from inheritune.errors import InherituneError
from inheritune.models.families import blocks, family_of, input_weights, num_heads, num_layers


def candidate_tokens(vocab_size: int, exclude: float = 0.04, special: tuple[int, ...] = ()) -> np.ndarray:
    """Ids between the lowest and highest ``exclude`` share of the vocabulary, minus specials."""
    lo, hi = int(np.ceil(exclude * vocab_size)), int(np.floor((1 - exclude) * vocab_size))
    ids = np.setdiff1d(np.arange(lo, hi), np.asarray(special, dtype=np.int64))
    return ids


def repeated_sequences(
    candidates: np.ndarray, seg_len: int, repeats: int, seeds: list[int], bos: int | None = None
) -> torch.Tensor:
    """``[len(seeds), (bos) + seg_len * repeats]``: per seed, ``seg_len`` distinct tokens repeated."""
    if seg_len > len(candidates):
        raise InherituneError(
            f"segment of {seg_len} unique tokens needs a larger vocabulary ({len(candidates)} candidates)"
        )
    rows = []
    for seed in seeds:
        segment = np.random.default_rng(seed).choice(candidates, size=seg_len, replace=False)
        rows.append(([bos] if bos is not None else []) + list(np.tile(segment, repeats)))
    return torch.tensor(np.asarray(rows, dtype=np.int64))


def _positions(seg_len: int, repeats: int, offset: int) -> tuple[np.ndarray, torch.Tensor, np.ndarray]:
    """Query positions (repeats 2..R), the ``[T, T]`` prefix-matching target mask, and for each
    query the position of the token after its previous occurrence."""
    T = offset + seg_len * repeats
    queries = np.arange(offset + seg_len, T)
    targets = torch.zeros(T, T)
    for p in queries:
        k = (p - offset) % seg_len
        for q in range(offset + k + 1, p + 1, seg_len):  # after each earlier occurrence
            targets[p, q] = 1.0
    return queries, targets, queries - seg_len + 1


def _head_write(config, proj: torch.nn.Module, out: torch.Tensor, head: int) -> torch.Tensor:
    """A head's output ``[..., head_dim]`` through its slice of the attention output projection."""
    d = out.shape[-1]
    return out @ input_weights(config, proj, head * d, (head + 1) * d)


def sequence_bytes(model: PreTrainedModel, length: int) -> int:
    """Planned bytes per sequence of a batch: every layer's attention probabilities (with a host
    copy) and head outputs, and a few hidden-size rows per token for the copying scores."""
    hidden = cast(torch.Tensor, model.get_input_embeddings().weight).shape[1]
    return batching.attention_bytes(model, length) + 16 * num_layers(model.config) * length * hidden


@torch.no_grad()
def induction_scores(
    model: PreTrainedModel,
    candidates: np.ndarray,
    seg_len: int = 25,
    repeats: int = 4,
    seeds: int = 100,
    bos: int | None = None,
    batch_size: int | None = None,
) -> dict[str, np.ndarray]:
    """Per-head ``prefix`` (prefix-matching) and ``copying`` scores, each ``[layers, heads]``, on
    ``batch_size`` sequences per pass (default: as many as the memory budget holds)."""
    if repeats < 2:
        raise InherituneError(f"induction needs at least 2 repeats, not {repeats}")
    family = family_of(model.config)
    model.eval()
    layers, heads = len(blocks(model)), num_heads(model.config)
    projections = [b.get_submodule(family.attn_out) for b in blocks(model)]
    norm = model.get_submodule(family.final_norm)
    unembed = cast(torch.Tensor, model.get_submodule(family.head).weight).float()
    centred = unembed - unembed.mean(0)
    offset = 0 if bos is None else 1
    queries, targets, attended = _positions(seg_len, repeats, offset)
    all_ids = repeated_sequences(candidates, seg_len, repeats=repeats, seeds=list(range(seeds)), bos=bos)

    def run(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        prefix, copying = torch.zeros(layers, heads), torch.zeros(layers, heads)
        with head_outputs(model) as outputs, final_residual(model) as final:
            probs = attention_probs(model, ids.to(model.device))
        for layer, a in enumerate(probs):
            prefix[layer] = (a.cpu() * targets).sum(-1)[:, :, queries].mean(-1).sum(0)
        resid = final["resid"][:, queries].float()
        direction = centred[
            ids[:, attended].to(centred.device)
        ]  # [B, Q, hidden]: the attended token's centred unembedding
        base = norm(resid).float()
        for layer in range(layers):
            out = outputs[layer][:, queries].float()
            for head in range(heads):
                write = _head_write(model.config, projections[layer], out[:, :, head], head).float()
                without = norm(resid - write).float()
                copying[layer, head] = ((base - without) * direction).sum(-1).mean(-1).sum(0)
        return prefix, copying

    size = batch_size or max(1, batching.budget(model) // sequence_bytes(model, all_ids.shape[1]))
    parts = list(batching.Batcher(size, "induction").pieces(all_ids, len, run, unit="sequence"))
    prefix = cast(torch.Tensor, sum(p for p, _ in parts))  # sums of tensors: there is at least one part
    copying = cast(torch.Tensor, sum(c for _, c in parts))
    return {"prefix": (prefix / seeds).numpy(), "copying": (copying / seeds).numpy()}


def top_heads(prefix: np.ndarray, copying: np.ndarray, k: int = 10) -> list[dict]:
    """The ``k`` heads with the highest prefix-matching score, with their copying score."""
    order = np.argsort(-prefix.ravel(), kind="stable")[:k]
    heads = prefix.shape[1]
    return [
        {
            "layer": int(i // heads),
            "head": int(i % heads),
            "prefix": float(prefix.ravel()[i]),
            "copying": float(copying.ravel()[i]),
        }
        for i in order
    ]

"""Metrics of attention degeneration on post-softmax attention matrices.

Every function takes a batch of matrices ``[..., T, T]`` (any leading shape: sequences, layers,
heads) and returns one value per matrix, computed in one batched call: no Python loop per
matrix, so 100 sequences x 30 layers x 9 heads cost seconds on a CPU.

Reference values at T=100, tau=0.9 (the tests check them): identity -> rank 90, uniform causal
averaging -> rank 5, a pure first-column sink -> rank 1 and column mass 1.
"""

from __future__ import annotations

import torch

# Energy shares are compared with this slack so that e.g. the identity's 90/100 counts as 0.9.
_EPS = 1e-6


def rank_from_energies(energies: torch.Tensor, tau: float = 0.9) -> torch.Tensor:
    """Smallest r whose r largest squared singular values hold ``tau`` of the total (``[..., T]`` -> ``[...]``)."""
    energies = energies.clamp_min(0).sort(dim=-1, descending=True).values
    share = energies.cumsum(-1) / energies.sum(-1, keepdim=True).clamp_min(torch.finfo(energies.dtype).tiny)
    return (share < tau - _EPS).sum(-1) + 1


def approx_rank(attn: torch.Tensor, tau: float = 0.9) -> torch.Tensor:
    """Approximate rank at energy ``tau`` from fp32 singular values (``torch.linalg.svdvals``)."""
    return rank_from_energies(torch.linalg.svdvals(attn.float()).square(), tau)


def approx_rank_fast(attn: torch.Tensor, tau: float = 0.9) -> torch.Tensor:
    """Same value as :func:`approx_rank`, from the eigenvalues of ``A A^T`` (the squared singular values).

    About 15x faster than an SVD on a CPU; used for the per-sequence distribution, where there
    are N times more matrices than for the averaged ones.
    """
    a = attn.float()
    return rank_from_energies(torch.linalg.eigvalsh(a @ a.mT), tau)


def column_weights(attn: torch.Tensor) -> torch.Tensor:
    """Mean over rows (queries) of the weight each column (key) receives: ``[..., T]``, sums to 1."""
    return attn.float().mean(-2)


def heaviest_column(attn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Share of attention on the heaviest column, and that column's index (0 = first-token sink)."""
    mass, column = column_weights(attn).max(-1)
    return mass, column


def columns_for_energy(attn: torch.Tensor, share: float = 0.9) -> torch.Tensor:
    """Fewest columns holding ``share`` of ``||A||_F^2`` (1 for a sink, ~0.9T for the identity)."""
    sq = attn.float().square().sum(-2).sort(dim=-1, descending=True).values
    cum = sq.cumsum(-1) / sq.sum(-1, keepdim=True).clamp_min(torch.finfo(sq.dtype).tiny)
    return (cum < share - _EPS).sum(-1) + 1


def row_entropy(attn: torch.Tensor) -> torch.Tensor:
    """Mean normalised entropy of the rows: 1 = uniform over the causal prefix, 0 = one-hot.

    Row i of a causal matrix can attend to i+1 positions, so its entropy is divided by
    log(i+1); row 0 (always one-hot) is left out.
    """
    a = attn.float()
    t = a.shape[-1]
    if t < 2:
        raise ValueError("row entropy needs T >= 2")
    h = -(a * a.clamp_min(1e-30).log()).sum(-1)[..., 1:]  # [..., T-1], rows 1..T-1
    norm = torch.log(torch.arange(2, t + 1, dtype=a.dtype, device=a.device))
    return (h / norm).mean(-1)


def uniform_causal(t: int) -> torch.Tensor:
    """The causal averaging matrix (row i spreads 1/(i+1) over positions 0..i): the no-sink baseline."""
    return torch.tril(torch.ones(t, t)) / torch.arange(1, t + 1, dtype=torch.float32)[:, None]


def uniform_causal_rank(t: int, tau: float = 0.9) -> int:
    """Rank of diffuse attention at this length: what 'low rank' must be compared with (~5 at T=100)."""
    return int(approx_rank_fast(uniform_causal(t), tau))

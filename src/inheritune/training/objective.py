"""The training loss: next-token cross-entropy, optionally mixed with distillation from a teacher,
computed chunk by chunk and fused with the LM head.

The plain way materialises [tokens, vocab] logits, upcasts them to fp32 and keeps them (and
their gradient) for the backward pass: for SmolLM2's 49K vocabulary at 4 x 512 tokens that is
0.4 GB per copy, pushed through memory several times. Here the head's matmul, the softmax and
its gradient run on chunks of rows during the forward pass, and only the gradients of the
hidden states and of the head weight are kept, so no full logits tensor ever exists. The
FLOPs are the same; the memory traffic and peak memory are much lower.

Distillation (Hinton et al.; the recovery loss of Minitron) adds a teacher:

    loss = alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE

where ``_T`` is the softmax at temperature T. The teacher's last hidden states are computed
once per micro-batch under no_grad (small: [tokens, hidden]), or read from the teacher cache;
its logits exist only one chunk at a time, next to the student's, so neither model ever has a
full [tokens, vocab] tensor. The gradient of the mix with respect to the student's logits is
``alpha * T * (p_T - q_T) + (1 - alpha) * (p - onehot)``. The teacher's distribution may also
come as its top k tokens (TopK, from the cache): approximate, with the rule its docstring states.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from inheritune.models.families import FAMILIES, logit_softcap


@dataclass
class TopK:
    """The teacher's distribution kept as its k most likely tokens: their tempered logits
    ``values`` and ids ``indices`` [tokens, k], and the log-normaliser ``lse`` [tokens] of all
    its tempered logits, so the k probabilities are exact. The rest of the mass, r, is spread
    over the other tokens in proportion to the student's own probabilities: the KL then leaves
    out r * KL(teacher tail || student tail) >= 0, and its gradient differs from the exact one
    by at most 2r in L1 per token (tests/test_teacher_cache.py checks both)."""

    values: torch.Tensor
    indices: torch.Tensor
    lse: torch.Tensor


@dataclass
class Teacher:
    """A frozen model whose next-token distribution the student learns to match."""

    model: PreTrainedModel
    alpha: float = 1.0  # weight of the KL term; 1 - alpha goes to cross-entropy
    temperature: float = 1.0

    def hidden(self, inputs: torch.Tensor) -> torch.Tensor:
        """Last hidden states [tokens, hidden] of the teacher, no graph kept."""
        with torch.no_grad():
            return self.model.base_model(input_ids=inputs).last_hidden_state.flatten(0, 1)

    @property
    def head(self) -> torch.Tensor:
        return self.model.get_output_embeddings().weight

    @property
    def softcap(self) -> float | None:
        return logit_softcap(self.model.config)

    def top_k(self, hidden: torch.Tensor, k: int, dtype: torch.dtype, chunk: int = 1024) -> TopK:
        """The TopK of the teacher's tempered logits from its hidden states, computed as the fused
        loss computes them (in ``dtype``, chunk by chunk)."""
        parts = []
        with torch.no_grad():
            for i in range(0, hidden.shape[0], chunk):
                z, _ = _logits(hidden[i : i + chunk].to(dtype), self.head.to(dtype), self.softcap)
                z = z / self.temperature if self.temperature != 1 else z
                top = z.topk(k, dim=-1)
                parts.append((top.values, top.indices, torch.logsumexp(z, dim=-1)))
        return TopK(*(torch.cat(p) for p in zip(*parts, strict=True)))


def _logits(h: torch.Tensor, w: torch.Tensor, softcap: float | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """fp32 logits of a chunk, soft-capped where the family does it (and tanh kept for the chain rule)."""
    z = (h @ w.T).float()
    if softcap is None:
        return z, None
    t = torch.tanh(z / softcap)
    return softcap * t, t


class _ExactTeacher:
    """The teacher's logits recomputed from its hidden states, one chunk at a time."""

    def __init__(
        self, hidden: torch.Tensor, weight: torch.Tensor, softcap: float | None, temp: float, dtype: torch.dtype
    ):
        self.hidden, self.weight, self.softcap, self.temp = hidden.to(dtype), weight.to(dtype), softcap, temp

    def term(self, i: int, j: int, logp_t: torch.Tensor, p_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(KL(q || p_T) summed over rows i:j, p_T - q), the latter in place of ``p_t``."""
        zt, _ = _logits(self.hidden[i:j], self.weight, self.softcap)
        logq = torch.log_softmax(zt / self.temp if self.temp != 1 else zt, dim=-1)
        q = logq.exp()
        return (q * (logq - logp_t)).sum(), p_t.sub_(q)


ROUNDING = 1e-6  # a top-k teacher's tail mass below this is 1 - (sum of k probabilities) rounding, not mass


class _TopKTeacher:
    """The teacher's distribution as TopK (its docstring states the rule for the tail)."""

    def __init__(self, top: TopK):
        self.top = top

    def term(self, i: int, j: int, logp_t: torch.Tensor, p_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """As _ExactTeacher.term, with the tail of q shaped as the student's: p_T r / s off the top k,
        where r and s are the teacher's and the student's mass outside it. s is summed over the tail
        itself: 1 - (top-k mass) cancels to 0 or below when the student is confident."""
        idx = self.top.indices[i:j].long()
        logq_k = self.top.values[i:j].float() - self.top.lse[i:j, None].float()
        q_k, p_k = logq_k.exp(), p_t.gather(1, idx)
        rest = 1 - q_k.sum(-1)
        rest = torch.where(rest > ROUNDING, rest, 0.0)  # below fp32's rounding of 1 - sum: no tail
        tail = p_t.scatter_(1, idx, 0.0)  # p_T off the top k, in place
        student_rest = tail.sum(-1).clamp_min(torch.finfo(torch.float32).tiny)
        kl = (q_k * (logq_k - logp_t.gather(1, idx))).sum() + torch.xlogy(rest, rest / student_rest).sum()
        kd = tail.mul_((1 - rest / student_rest)[:, None])
        return kl, kd.scatter_(1, idx, p_k - q_k)


class _FusedLoss(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, hidden, weight, targets, chunk: int, softcap: float | None, dtype: torch.dtype, teacher: tuple | None
    ):
        """Mean loss of ``targets`` under logits = hidden @ weight.T; ``teacher`` = (_ExactTeacher or
        _TopKTeacher, alpha, T) adds the distillation term."""
        h, w = hidden.to(dtype), weight.to(dtype)
        grad_h = torch.empty_like(h)
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if weight.requires_grad else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for i in range(0, h.shape[0], chunk):
            hc, yc = h[i : i + chunk], targets[i : i + chunk]
            z, tanh = _logits(hc, w, softcap)
            loss, g = _chunk(z, yc, teacher, i)
            total += loss
            if tanh is not None:
                g *= 1 - tanh * tanh
            g = g.to(dtype)
            grad_h[i : i + chunk] = g @ w
            if grad_w is not None:
                grad_w += (g.T @ hc).float()
        n = h.shape[0]
        ctx.save_for_backward(grad_h, grad_w if grad_w is not None else torch.empty(0))
        ctx.n, ctx.has_w, ctx.hidden_dtype = n, grad_w is not None, hidden.dtype
        return total / n

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w = ctx.saved_tensors
        scale = grad_out / ctx.n
        dh = (grad_h * scale).to(ctx.hidden_dtype)
        dw = grad_w * scale if ctx.has_w else None
        return dh, dw, None, None, None, None, None


def _chunk(z: torch.Tensor, yc: torch.Tensor, teacher: tuple | None, i: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed loss, its gradient with respect to the logits ``z``) of one chunk of rows starting at
    ``i``: p - onehot for cross-entropy; (1 - alpha)(p - onehot) + alpha T (p_T - q) with a teacher.
    Full-vocabulary tensors are reused in place where the formula allows."""
    rows = torch.arange(len(yc), device=z.device)
    logp = torch.log_softmax(z, dim=-1)
    nll = -logp[rows, yc].sum()
    if teacher is None:
        g = logp.exp_()
        g[rows, yc] -= 1
        return nll, g
    source, alpha, temp = teacher
    if alpha == 1 and temp == 1:
        return source.term(i, i + len(yc), logp, logp.exp())
    logp_t = logp if temp == 1 else torch.log_softmax(z / temp, dim=-1)
    kl, kd = source.term(i, i + len(yc), logp_t, logp_t.exp())
    g = logp.exp_().mul_(1 - alpha).add_(kd, alpha=alpha * temp)
    g[rows, yc] -= 1 - alpha
    return alpha * temp * temp * kl + (1 - alpha) * nll, g


def plain_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    teacher_logits: torch.Tensor | None = None,
    alpha: float = 1.0,
    temperature: float = 1.0,
) -> torch.Tensor:
    """The same loss on full logits [tokens, vocab]: the reference the fused path is tested against,
    and the path for models whose head the fused one cannot take (a biased head, FSDP)."""
    ce = F.cross_entropy(logits.float(), targets)
    if teacher_logits is None:
        return ce
    t = temperature
    kl = F.kl_div(
        torch.log_softmax(logits.float() / t, -1),
        torch.log_softmax(teacher_logits.float() / t, -1),
        log_target=True,
        reduction="batchmean",
    )
    return alpha * t * t * kl + (1 - alpha) * ce


class CausalLMLoss(torch.nn.Module):
    """Wraps a causal LM so that ``forward(tokens)`` is the training loss (what DDP/compile wrap).

    The fused path needs the hidden states that feed a bias-free LM head, which every family in
    the table provides through ``model.base_model``; anything else takes the plain path. The
    teacher is held outside the module's registered children, so DDP neither broadcasts nor
    synchronises it: each rank runs its own copy.
    """

    def __init__(self, model: PreTrainedModel, fused: bool = True, chunk: int = 1024, teacher: Teacher | None = None):
        super().__init__()
        self.model, self.chunk = model, chunk
        self._teacher = (teacher,)  # a tuple: not a submodule
        head = model.get_output_embeddings()
        self.fused = fused and model.config.model_type in FAMILIES and head is not None and head.bias is None
        self.softcap = logit_softcap(model.config)

    @property
    def teacher(self) -> Teacher | None:
        return self._teacher[0]

    def forward(self, tokens: torch.Tensor, teacher_states: torch.Tensor | TopK | None = None) -> torch.Tensor:
        """The loss of ``tokens`` [rows, seq_len + 1]. ``teacher_states``: what the teacher makes of its
        inputs when already known (training/teacher_cache.py): its last hidden states
        [rows * seq_len, hidden] (exact) or its TopK (approximate)."""
        inputs, targets = tokens[:, :-1], tokens[:, 1:].flatten()
        teacher = self.teacher
        if not self.fused:
            logits = self.model(input_ids=inputs).logits.flatten(0, 1)
            if teacher is None:
                return plain_loss(logits, targets)
            with torch.no_grad():
                t_logits = teacher.model(input_ids=inputs).logits.flatten(0, 1)
            return plain_loss(
                logits, targets, teacher_logits=t_logits, alpha=teacher.alpha, temperature=teacher.temperature
            )
        hidden = self.model.base_model(input_ids=inputs).last_hidden_state.flatten(0, 1)
        weight = self.model.get_output_embeddings().weight
        dtype = (
            torch.get_autocast_dtype(hidden.device.type)
            if torch.is_autocast_enabled(hidden.device.type)
            else weight.dtype
        )
        kd = None
        if teacher is not None:
            states = teacher.hidden(inputs) if teacher_states is None else teacher_states
            source = (
                _TopKTeacher(states)
                if isinstance(states, TopK)
                else _ExactTeacher(states, teacher.head, softcap=teacher.softcap, temp=teacher.temperature, dtype=dtype)
            )
            kd = (source, teacher.alpha, teacher.temperature)
        with torch.autocast(hidden.device.type, enabled=False):
            return _FusedLoss.apply(hidden, weight, targets, self.chunk, self.softcap, dtype, kd)

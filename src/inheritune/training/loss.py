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
once per micro-batch under no_grad (small: [tokens, hidden]); its logits exist only one chunk
at a time, next to the student's, so neither model ever has a full [tokens, vocab] tensor. The
gradient of the mix with respect to the student's logits is
``alpha * T * (p_T - q_T) + (1 - alpha) * (p - onehot)``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from inheritune.models.families import FAMILIES, logit_softcap


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


def _logits(h: torch.Tensor, w: torch.Tensor, softcap: float | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """fp32 logits of a chunk, soft-capped where the family does it (and tanh kept for the chain rule)."""
    z = (h @ w.T).float()
    if softcap is None:
        return z, None
    t = torch.tanh(z / softcap)
    return softcap * t, t


class _FusedLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk: int, softcap: float | None, dtype: torch.dtype,
                teacher: tuple | None):
        """Mean loss of ``targets`` under logits = hidden @ weight.T; ``teacher`` = (hidden, weight,
        softcap, alpha, T) adds the distillation term."""
        h, w = hidden.to(dtype), weight.to(dtype)
        grad_h = torch.empty_like(h)
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if weight.requires_grad else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        if teacher is not None:
            t_hidden, t_weight, t_softcap, alpha, temp = teacher
            t_hidden, t_weight = t_hidden.to(dtype), t_weight.to(dtype)
        for i in range(0, h.shape[0], chunk):
            hc, yc = h[i:i + chunk], targets[i:i + chunk]
            z, tanh = _logits(hc, w, softcap)
            logp = torch.log_softmax(z, dim=-1)
            nll = -logp.gather(1, yc[:, None]).sum()
            if teacher is not None:  # before logp becomes p in place; at T = 1 the student's are logp
                zt, _ = _logits(t_hidden[i:i + chunk], t_weight, t_softcap)
                logq = torch.log_softmax(zt / temp, dim=-1)
                logp_t = logp if temp == 1 else torch.log_softmax(z / temp, dim=-1)
                q = logq.exp()
                kl = (q * (logq - logp_t)).sum()
                p_t = None if temp == 1 else logp_t.exp_()
            g = logp.exp_()  # softmax, in place; minus one-hot = d(nll)/d(logits)
            if teacher is None:
                g[torch.arange(len(yc), device=g.device), yc] -= 1
                total += nll
            else:  # (1 - alpha) (p - onehot) + alpha T (p_T - q)
                total += alpha * temp * temp * kl + (1 - alpha) * nll
                kd = (g if p_t is None else p_t).sub(q).mul_(alpha * temp)
                g.mul_(1 - alpha).add_(kd)
                g[torch.arange(len(yc), device=g.device), yc] -= 1 - alpha
            if tanh is not None:
                g *= 1 - tanh * tanh
            g = g.to(dtype)
            grad_h[i:i + chunk] = g @ w
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


def plain_loss(logits: torch.Tensor, targets: torch.Tensor, teacher_logits: torch.Tensor | None = None,
               alpha: float = 1.0, temperature: float = 1.0) -> torch.Tensor:
    """The same loss on full logits [tokens, vocab]: the reference the fused path is tested against,
    and the path for models whose head the fused one cannot take (a biased head, FSDP)."""
    ce = F.cross_entropy(logits.float(), targets)
    if teacher_logits is None:
        return ce
    t = temperature
    kl = F.kl_div(torch.log_softmax(logits.float() / t, -1), torch.log_softmax(teacher_logits.float() / t, -1),
                  log_target=True, reduction="batchmean")
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

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        inputs, targets = tokens[:, :-1], tokens[:, 1:].flatten()
        teacher = self.teacher
        if not self.fused:
            logits = self.model(input_ids=inputs).logits.flatten(0, 1)
            if teacher is None:
                return plain_loss(logits, targets)
            with torch.no_grad():
                t_logits = teacher.model(input_ids=inputs).logits.flatten(0, 1)
            return plain_loss(logits, targets, t_logits, teacher.alpha, teacher.temperature)
        hidden = self.model.base_model(input_ids=inputs).last_hidden_state.flatten(0, 1)
        weight = self.model.get_output_embeddings().weight
        kd = None
        if teacher is not None:
            kd = (teacher.hidden(inputs), teacher.head, teacher.softcap, teacher.alpha, teacher.temperature)
        dtype = torch.get_autocast_dtype(hidden.device.type) if torch.is_autocast_enabled(hidden.device.type) else weight.dtype
        with torch.autocast(hidden.device.type, enabled=False):
            return _FusedLoss.apply(hidden, weight, targets, self.chunk, self.softcap, dtype, kd)

"""The training loss: next-token cross-entropy computed chunk by chunk, fused with the LM head.

The plain way materialises [tokens, vocab] logits, upcasts them to fp32 and keeps them (and
their gradient) for the backward pass: for SmolLM2's 49K vocabulary at 4 x 512 tokens that is
0.4 GB per copy, pushed through memory several times. Here the head's matmul, the softmax and
its gradient run on chunks of rows during the forward pass, and only the gradients of the
hidden states and of the head weight are kept, so no full logits tensor ever exists. The
FLOPs are the same; the memory traffic and peak memory are much lower.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from inheritune.models.families import FAMILIES


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk: int, softcap: float | None, dtype: torch.dtype):
        """Mean NLL of ``targets`` under logits = hidden @ weight.T (optionally soft-capped)."""
        h, w = hidden.to(dtype), weight.to(dtype)
        grad_h = torch.empty_like(h)
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if weight.requires_grad else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for i in range(0, h.shape[0], chunk):
            hc, yc = h[i:i + chunk], targets[i:i + chunk]
            z = (hc @ w.T).float()
            if softcap is not None:
                t = torch.tanh(z / softcap)
                z = softcap * t
            logp = torch.log_softmax(z, dim=-1)
            total -= logp.gather(1, yc[:, None]).sum()
            g = logp.exp_()  # softmax, in place; minus one-hot = d(nll)/d(logits)
            g[torch.arange(len(yc), device=g.device), yc] -= 1
            if softcap is not None:
                g *= 1 - t * t
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
        return dh, dw, None, None, None, None


class CausalLMLoss(torch.nn.Module):
    """Wraps a causal LM so that ``forward(tokens)`` is the training loss (what DDP/compile wrap).

    The fused path needs the hidden states that feed a bias-free LM head, which every family in
    the table provides through ``model.base_model``; anything else takes the plain path.
    """

    def __init__(self, model: PreTrainedModel, fused: bool = True, chunk: int = 1024):
        super().__init__()
        self.model, self.chunk = model, chunk
        head = model.get_output_embeddings()
        self.fused = fused and model.config.model_type in FAMILIES and head is not None and head.bias is None
        self.softcap = getattr(model.config, "final_logit_softcapping", None)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        inputs, targets = tokens[:, :-1], tokens[:, 1:].flatten()
        if not self.fused:
            logits = self.model(input_ids=inputs).logits
            return F.cross_entropy(logits.flatten(0, 1).float(), targets)
        hidden = self.model.base_model(input_ids=inputs).last_hidden_state.flatten(0, 1)
        weight = self.model.get_output_embeddings().weight
        dtype = torch.get_autocast_dtype(hidden.device.type) if torch.is_autocast_enabled(hidden.device.type) else weight.dtype
        with torch.autocast(hidden.device.type, enabled=False):
            return _LinearCrossEntropy.apply(hidden, weight, targets, self.chunk, self.softcap, dtype)

"""Multi-head self-attention, written out with explicit matmuls, softmax and a rotate-half
RoPE so that the definition the C++ code is held to is unambiguous:

    q = rope(x @ wq^T), k = rope(x @ wk^T), v = x @ wv^T      (heads of size D = C / H)
    att = softmax(q k^T / sqrt(D) + mask)                     mask: -inf above the diagonal
    out = merge_heads(att @ v) @ wo^T

RoPE rotates the pair (i, i + D/2) of each head by pos * theta^(-2i/D), pos = 0..T-1 within
each sequence. Two configurations: causal with RoPE ("causal_rope.*") and bidirectional
without ("bidir.*"). Each saves the inputs, the buffers forward saves (q, k, v after RoPE
as [B, H, T, D], att as [B, H, T, T], y as [B, T, C]), out, and the gradients of
sum(out * d_out) with respect to x and the four weights.
"""
import math

import torch
from fixture_io import save

B, T, H, D = 2, 7, 3, 8
C = H * D
THETA = 10000.0


def rope(t):
    """t: [B, H, T, D] -> the same, each (i, i + D/2) pair rotated by pos * THETA^(-2i/D)."""
    half = D // 2
    inv_freq = THETA ** (-2.0 * torch.arange(half, dtype=torch.float64) / D)
    angle = torch.arange(T, dtype=torch.float64)[:, None] * inv_freq[None, :]  # [T, D/2]
    cos = torch.cat([angle.cos(), angle.cos()], dim=-1)
    sin = torch.cat([angle.sin(), angle.sin()], dim=-1)
    rotated = torch.cat([-t[..., half:], t[..., :half]], dim=-1)
    return t * cos + rotated * sin


def attention(x, wq, wk, wv, wo, causal, use_rope):
    def heads(t):  # [B, T, C] -> [B, H, T, D]
        return t.reshape(B, T, H, D).transpose(1, 2)

    q, k, v = heads(x @ wq.T), heads(x @ wk.T), heads(x @ wv.T)
    if use_rope:
        q, k = rope(q), rope(k)
    scores = q @ k.transpose(-1, -2) / math.sqrt(D)
    if causal:
        above = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
        scores = scores.masked_fill(above, float("-inf"))
    att = torch.softmax(scores, dim=-1)
    y = (att @ v).transpose(1, 2).reshape(B, T, C)
    return y @ wo.T, {"q": q, "k": k, "v": v, "att": att, "y": y}


def case(prefix, causal, use_rope):
    x = torch.randn(B, T, C, dtype=torch.float64, requires_grad=True)
    # Weights scaled like a trained layer's (std 1/sqrt(C) per output) so the softmax is
    # neither uniform nor one-hot.
    ws = [(torch.randn(C, C, dtype=torch.float64) * 1.5 / math.sqrt(C)).requires_grad_()
          for _ in range(4)]
    out, saved = attention(x, *ws, causal=causal, use_rope=use_rope)
    d_out = torch.randn(B, T, C, dtype=torch.float64)
    (out * d_out).sum().backward()
    tensors = {"x": x, "wq": ws[0], "wk": ws[1], "wv": ws[2], "wo": ws[3], "out": out,
               "d_out": d_out, "d_x": x.grad, "d_wq": ws[0].grad, "d_wk": ws[1].grad,
               "d_wv": ws[2].grad, "d_wo": ws[3].grad}
    tensors.update(saved)
    return {f"{prefix}.{key}": value for key, value in tensors.items()}


def main(out):
    tensors = {}
    tensors.update(case("causal_rope", causal=True, use_rope=True))
    tensors.update(case("bidir", causal=False, use_rope=False))
    tensors["sizes"] = torch.tensor([B, T, H, D], dtype=torch.int64)
    save(out, "attention", tensors)

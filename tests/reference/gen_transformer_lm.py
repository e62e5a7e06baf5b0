"""Whole-model fixture: a small decoder-only transformer written out in PyTorch (float64)
with the same definition as src/lm/transformer_lm.h: logits, loss, every parameter
gradient, and the losses of 5 AdamW steps with gradient clipping."""
import math

import torch
import torch.nn.functional as F
from fixture_io import save

V, C, L, H, FF, T, B = 37, 16, 2, 2, 24, 9, 2
EPS, THETA = 1e-5, 10000.0
LR, BETAS, ADAM_EPS, WD, CLIP = 1e-2, (0.9, 0.95), 1e-8, 0.1, 1.0


def rmsnorm(x, w):
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + EPS) * w


def rope(x):  # x: [B, H, T, D]; rotate pairs (i, i + D/2) by pos * theta^(-2i/D)
    d = x.shape[-1]
    half = d // 2
    inv = THETA ** (-2.0 * torch.arange(half, dtype=torch.float64) / d)
    ang = torch.arange(x.shape[2], dtype=torch.float64)[:, None] * inv[None, :]
    cos, sin = ang.cos(), ang.sin()
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def attention(x, p, l):
    b, t, c = x.shape
    d = c // H

    def heads(z):
        return z.view(b, t, H, d).transpose(1, 2)

    q = rope(heads(x @ p[f"layers.{l}.attn.wq"].T))
    k = rope(heads(x @ p[f"layers.{l}.attn.wk"].T))
    v = heads(x @ p[f"layers.{l}.attn.wv"].T)
    att = q @ k.transpose(-1, -2) / math.sqrt(d)
    mask = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)
    att = att.masked_fill(mask, float("-inf")).softmax(-1)
    y = (att @ v).transpose(1, 2).reshape(b, t, c)
    return y @ p[f"layers.{l}.attn.wo"].T


def forward(p, tokens, tied):
    x = p["tok_emb"][tokens]
    for l in range(L):
        x = x + attention(rmsnorm(x, p[f"layers.{l}.attn_norm"]), p, l)
        h = rmsnorm(x, p[f"layers.{l}.ffn_norm"])
        f = (F.silu(h @ p[f"layers.{l}.ffn.w1"].T) * (h @ p[f"layers.{l}.ffn.w3"].T))
        x = x + f @ p[f"layers.{l}.ffn.w2"].T
    x = rmsnorm(x, p["final_norm"])
    head = p["tok_emb"] if tied else p["lm_head"]
    return x @ head.T


def make_params(tied):
    g = torch.Generator().manual_seed(7)
    shapes = {"tok_emb": (V, C)}
    for l in range(L):
        shapes.update({f"layers.{l}.attn_norm": (C,), f"layers.{l}.attn.wq": (C, C),
                       f"layers.{l}.attn.wk": (C, C), f"layers.{l}.attn.wv": (C, C),
                       f"layers.{l}.attn.wo": (C, C), f"layers.{l}.ffn_norm": (C,),
                       f"layers.{l}.ffn.w1": (FF, C), f"layers.{l}.ffn.w3": (FF, C),
                       f"layers.{l}.ffn.w2": (C, FF)})
    shapes["final_norm"] = (C,)
    if not tied:
        shapes["lm_head"] = (V, C)
    p = {}
    for name, shape in shapes.items():
        if len(shape) == 1:  # norm gains near 1 so their gradients are exercised
            t = 1.0 + 0.2 * torch.randn(shape, generator=g, dtype=torch.float64)
        else:
            t = 0.3 * torch.randn(shape, generator=g, dtype=torch.float64)
        p[name] = t.requires_grad_(True)
    return p


def make_case(out, tied):
    name = "transformer_lm_tied" if tied else "transformer_lm"
    g = torch.Generator().manual_seed(11)
    tokens = torch.randint(0, V, (B, T), generator=g)
    targets = torch.randint(0, V, (B, T), generator=g)
    targets[0, 3] = -1  # ignored positions
    targets[1, 0] = -1
    p = make_params(tied)
    result = {f"param.{k}": v.detach().clone() for k, v in p.items()}
    result["tokens"] = tokens.to(torch.int32)
    result["targets"] = targets.to(torch.int32)

    logits = forward(p, tokens, tied)
    loss = F.cross_entropy(logits.view(-1, V), targets.view(-1).long(), ignore_index=-1)
    loss.backward()
    result["logits"] = logits.detach()
    result["loss"] = loss.detach().reshape(1)
    for k, v in p.items():
        result[f"grad.{k}"] = v.grad.detach().clone()

    # 5 AdamW steps on the same batch, decay on matrices only, clipped by global norm.
    decay = [v for v in p.values() if v.dim() >= 2]
    no_decay = [v for v in p.values() if v.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WD},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=LR, betas=BETAS, eps=ADAM_EPS)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = F.cross_entropy(forward(p, tokens, tied).view(-1, V), targets.view(-1).long(),
                               ignore_index=-1)
        losses.append(loss.item())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(p.values()), CLIP)
        opt.step()
    losses.append(F.cross_entropy(forward(p, tokens, tied).view(-1, V),
                                  targets.view(-1).long(), ignore_index=-1).item())
    result["step_losses"] = torch.tensor(losses, dtype=torch.float64)
    save(out, name, result)


def main(out):
    make_case(out, tied=False)
    make_case(out, tied=True)

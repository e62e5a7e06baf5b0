"""MultitaskModel (src/tabular/multitask_model.h), loss and every parameter gradient from
PyTorch in float64, one fixture per architecture: multitask_model_<case>.safetensors.

  e = [embed_0[cat_0], embed_1[cat_1], nums]     h = e @ input.weight.T + input.bias
  shared_bottom: z = relu(h @ w1.T + b1) @ w2.T + b2, every task
  omoe / mmoe:   z_k = sum_e softmax(h @ W_g.T + b_g)_e expert_e(h) (OMoE: one gate)
                 top-k gates: softmax over each row's top k logits, 0 elsewhere
  ple:           levels of CGC; level l > 0: task k's experts and gate read task k's output
                 of level l-1, shared experts and gate the shared output
  tower_k(z_k) = relu(z_k @ w1.T + b1) @ w2.T + b2
  loss = sum_k weight_k * (BCE-with-logits (binary) or MSE (regression)), batch means.
Experts are act(x @ w1[e].T) @ w2[e].T (no biases). Inputs are float32 values (the model
reads float numbers and targets). "config" holds the sizes the C++ test builds the model
from: [arch (0 shared_bottom, 1 omoe, 2 mmoe, 3 ple), gelu, d_model, expert_hidden,
n_experts, gate_top_k, ple_levels, ple_shared, ple_task, tower_hidden, B].
"""
import torch
import torch.nn.functional as F
from fixture_io import save

ARCHS = ["shared_bottom", "omoe", "mmoe", "ple"]
TABLE_ROWS, EMBED_DIMS, N_NUMERIC = [5, 3], [3, 2], 2
KINDS, WEIGHTS = ["binary", "regression"], [1.0, 0.5]
CASES = {  # name: arch, gelu, d, H, E, top_k, levels, Es, Et, Ht, B
    "shared_bottom": ("shared_bottom", 0, 4, 5, 0, 0, 0, 0, 0, 3, 6),
    "omoe": ("omoe", 1, 4, 5, 3, 0, 0, 0, 0, 3, 6),
    "mmoe": ("mmoe", 0, 4, 5, 4, 0, 0, 0, 0, 3, 6),
    "mmoe_top2": ("mmoe", 1, 4, 5, 4, 2, 0, 0, 0, 3, 6),
    "ple1": ("ple", 1, 4, 5, 0, 0, 1, 1, 2, 3, 6),
    "ple2": ("ple", 0, 4, 5, 0, 0, 2, 1, 2, 3, 6),
    "ple3": ("ple", 1, 4, 3, 0, 0, 3, 2, 1, 3, 5),
}


def param(*shape, scale=1.0):
    return (torch.randn(*shape, dtype=torch.float64) * scale).requires_grad_(True)


def gate(x, w, b, top_k):
    logits = x @ w.T + b
    if top_k and top_k < logits.shape[1]:
        kept = torch.zeros_like(logits, dtype=torch.bool)
        kept.scatter_(1, logits.topk(top_k, dim=1).indices, True)
        logits = logits.masked_fill(~kept, float("-inf"))
    return torch.softmax(logits, dim=1)


def make_case(name, arch, gelu, d, H, E, top_k, levels, Es, Et, Ht, B):
    act = F.gelu if gelu else F.relu
    K = len(KINDS)
    P = {}
    for c, (rows, dim) in enumerate(zip(TABLE_ROWS, EMBED_DIMS)):
        P[f"embed.{c}.weight"] = param(rows, dim, scale=0.5)
    d_in = sum(EMBED_DIMS) + N_NUMERIC
    P["input.weight"], P["input.bias"] = param(d, d_in, scale=0.6), param(d, scale=0.2)

    def bank(prefix, n):
        P[prefix + "w1"], P[prefix + "w2"] = param(n, H, d, scale=0.6), param(n, d, H, scale=0.5)

    def expert(prefix, e, x):
        return act(x @ P[prefix + "w1"][e].T) @ P[prefix + "w2"][e].T

    if arch == "shared_bottom":
        P["bottom.w1"], P["bottom.b1"] = param(H, d, scale=0.6), param(H, scale=0.2)
        P["bottom.w2"], P["bottom.b2"] = param(d, H, scale=0.5), param(d, scale=0.2)
    elif arch in ("omoe", "mmoe"):
        G = 1 if arch == "omoe" else K
        for g in range(G):
            P[f"{arch}.gate.{g}.w"], P[f"{arch}.gate.{g}.b"] = param(E, d, scale=0.8), param(E, scale=0.3)
        bank(f"{arch}.experts.", E)
    else:
        n = Es + K * Et
        for l in range(levels):
            p = f"ple.{l}."
            for k in range(K):
                P[f"{p}task.{k}.gate.w"] = param(Et + Es, d, scale=0.8)
                P[f"{p}task.{k}.gate.b"] = param(Et + Es, scale=0.3)
            if l + 1 < levels:
                P[p + "shared.gate.w"], P[p + "shared.gate.b"] = param(n, d, scale=0.8), param(n, scale=0.3)
            bank(p + "experts.", n)
    for k in range(K):
        p = f"tower.{k}."
        P[p + "w1"], P[p + "b1"] = param(Ht, d, scale=0.6), param(Ht, scale=0.2)
        P[p + "w2"], P[p + "b2"] = param(1, Ht, scale=0.6), param(1, scale=0.2)

    cats = torch.stack([torch.randint(0, r, (B,)) for r in TABLE_ROWS], dim=1).to(torch.int32)
    nums = torch.randn(B, N_NUMERIC).float().double()
    targets = torch.stack([torch.randint(0, 2, (B,)).double(), torch.randn(B).float().double()], 1)

    e = torch.cat([P[f"embed.{c}.weight"][cats[:, c].long()] for c in range(len(TABLE_ROWS))]
                  + [nums], dim=1)
    h = e @ P["input.weight"].T + P["input.bias"]
    if arch == "shared_bottom":
        z = F.relu(h @ P["bottom.w1"].T + P["bottom.b1"]) @ P["bottom.w2"].T + P["bottom.b2"]
        zs = [z] * K
    elif arch in ("omoe", "mmoe"):
        ys = [expert(f"{arch}.experts.", e_, h) for e_ in range(E)]
        zs = []
        for k in range(K):
            g = 0 if arch == "omoe" else k
            p = gate(h, P[f"{arch}.gate.{g}.w"], P[f"{arch}.gate.{g}.b"], top_k)
            zs.append(sum(p[:, j:j + 1] * ys[j] for j in range(E)))
    else:
        n = Es + K * Et
        task_cols = [[Es + k * Et + j for j in range(Et)] + list(range(Es)) for k in range(K)]
        expert_in = [K] * Es + [k for k in range(K) for _ in range(Et)]
        ins = [h] * (K + 1)
        for l in range(levels):
            p = f"ple.{l}."
            ys = [expert(p + "experts.", e_, ins[expert_in[e_]]) for e_ in range(n)]
            outs = []
            for k in range(K):
                g = gate(ins[k], P[f"{p}task.{k}.gate.w"], P[f"{p}task.{k}.gate.b"], top_k)
                outs.append(sum(g[:, j:j + 1] * ys[e_] for j, e_ in enumerate(task_cols[k])))
            if l + 1 < levels:
                g = gate(ins[K], P[p + "shared.gate.w"], P[p + "shared.gate.b"], top_k)
                outs.append(sum(g[:, e_:e_ + 1] * ys[e_] for e_ in range(n)))
            ins = outs
        zs = ins[:K]
    logits, losses, preds = [], [], []
    for k in range(K):
        p = f"tower.{k}."
        t = (F.relu(zs[k] @ P[p + "w1"].T + P[p + "b1"]) @ P[p + "w2"].T + P[p + "b2"])[:, 0]
        if KINDS[k] == "binary":
            losses.append(F.binary_cross_entropy_with_logits(t, targets[:, k]))
            preds.append(torch.sigmoid(t))
        else:
            losses.append(F.mse_loss(t, targets[:, k]))
            preds.append(t)
    loss = sum(w * l for w, l in zip(WEIGHTS, losses))
    names = list(P)
    grads = torch.autograd.grad(loss, [P[n] for n in names])
    tensors = {
        "config": torch.tensor([ARCHS.index(arch), gelu, d, H, E, top_k, levels, Es, Et, Ht, B],
                               dtype=torch.int64),
        "cats": cats, "nums": nums, "targets": targets, "loss": loss.reshape(1),
        "task_losses": torch.stack(losses), "predictions": torch.stack(preds, dim=1),
    }
    for n, g in zip(names, grads):
        tensors["param." + n], tensors["grad." + n] = P[n], g
    return tensors


def main(out):
    for name, case in CASES.items():
        save(out, "multitask_model_" + name, make_case(name, *case))

"""PLE with two extraction levels (Tang et al. 2020), forward and backward, from PyTorch in
float64: the second level reads different inputs per expert group.

Level 0 reads x everywhere and has K task gates and a shared gate (over every expert).
Level 1 reads level 0's outputs: task k's experts and gate read task k's output, the shared
expert reads the shared output; it has task gates only. Each level is a bank of SwiGLU
experts, shared first, then task k's at [Es + k*Et, Es + (k+1)*Et); task k's gate mixes
its own experts then the shared ones.
Gradients of sum_k sum(out1_k * dy_k) with respect to x and every parameter.
"""
import torch
import torch.nn.functional as F
from fixture_io import save


def main(out):
    T, d, K, Es, Et, H = 6, 4, 2, 1, 2, 5
    E = Es + K * Et

    def param(*shape, scale=1.0):
        return (torch.randn(*shape, dtype=torch.float64) * scale).requires_grad_(True)

    x = param(T, d)
    task_cols = [[Es + k * Et + j for j in range(Et)] + list(range(Es)) for k in range(K)]
    levels = []
    for level in range(2):
        cols = task_cols + ([list(range(E))] if level == 0 else [])
        levels.append({
            "w1": param(E, H, d, scale=0.5), "w3": param(E, H, d, scale=0.5),
            "w2": param(E, d, H, scale=0.4),
            "gates": [(param(len(c), d, scale=0.7), param(len(c), scale=0.3)) for c in cols],
            "cols": cols,
        })

    def expert(lv, e, inp):
        return (F.silu(inp @ lv["w1"][e].T) * (inp @ lv["w3"][e].T)) @ lv["w2"][e].T

    # Input of bank expert e and of gate g: 0..K-1 task k's, K the shared one.
    def run(lv, inputs, expert_in, gate_in):
        ys = [expert(lv, e, inputs[expert_in[e]]) for e in range(E)]
        outs = []
        for g, ((w, b), c) in enumerate(zip(lv["gates"], lv["cols"])):
            p = torch.softmax(inputs[gate_in[g]] @ w.T + b, dim=1)
            outs.append(sum(p[:, j:j + 1] * ys[e] for j, e in enumerate(c)))
        return outs

    out0 = run(levels[0], [x], [0] * E, [0] * (K + 1))
    expert_in = [K] * Es + [k for k in range(K) for _ in range(Et)]
    out1 = run(levels[1], out0, expert_in, list(range(K)))
    dy = torch.randn(K, T, d, dtype=torch.float64)
    loss = sum((y * dy[k]).sum() for k, y in enumerate(out1))

    names, params = ["x"], [x]
    for level, lv in enumerate(levels):
        for n in ("w1", "w3", "w2"):
            names.append(f"{level}.experts.{n}")
            params.append(lv[n])
        for g, (w, b) in enumerate(lv["gates"]):
            gate = f"task.{g}.gate." if g < K else "shared.gate."
            names += [f"{level}.{gate}w", f"{level}.{gate}b"]
            params += [w, b]
    grads = torch.autograd.grad(loss, params)
    tensors = {"sizes": torch.tensor([T, d, K, Es, Et, H], dtype=torch.int64), "dy": dy,
               "y": torch.stack(out1)}
    for n, p, g in zip(names, params, grads):
        tensors[n], tensors["d" + n] = p, g
    save(out, "ple_levels", tensors)

"""PLE, one extraction level (CGC; Tang et al. 2020), forward and backward, from PyTorch in
float64.

Es shared SwiGLU experts and Et per task, stacked in one bank: shared experts first, then
task k's at [Es + k*Et, Es + (k+1)*Et). Task k's gate is a softmax over its own experts
then the shared ones; the shared gate (for a next level) a softmax over every expert in
bank order:
  out_k[t] = sum_j softmax(x[t] @ Wk.T + bk)_j * expert_{cols_k[j]}(x[t])
Gradients of sum over outputs of sum(out * dy) with respect to x, every gate and every
expert weight.
"""
import torch
import torch.nn.functional as F
from fixture_io import save


def main(out):
    T, d, K, Es, Et, H = 7, 5, 3, 2, 2, 6
    E = Es + K * Et

    def param(*shape, scale=1.0):
        return (torch.randn(*shape, dtype=torch.float64) * scale).requires_grad_(True)

    x = param(T, d)
    w1, w3, w2 = param(E, H, d, scale=0.5), param(E, H, d, scale=0.5), param(E, d, H, scale=0.4)
    cols = [[Es + k * Et + j for j in range(Et)] + list(range(Es)) for k in range(K)]
    cols.append(list(range(E)))  # the shared gate
    gates = [(param(len(c), d, scale=0.7), param(len(c), scale=0.3)) for c in cols]
    dy = torch.randn(K + 1, T, d, dtype=torch.float64)

    ys = torch.stack([(F.silu(x @ w1[e].T) * (x @ w3[e].T)) @ w2[e].T for e in range(E)])
    outs = []
    for (w, b), c in zip(gates, cols):
        g = torch.softmax(x @ w.T + b, dim=1)  # [T, len(c)]
        outs.append(torch.einsum("tj,jtd->td", g, ys[c]))
    loss = sum((y * dy[i]).sum() for i, y in enumerate(outs))
    flat = [p for wb in gates for p in wb]
    grads = torch.autograd.grad(loss, [x, w1, w3, w2] + flat)
    tensors = {
        "sizes": torch.tensor([T, d, K, Es, Et, H], dtype=torch.int64),
        "x": x, "w1": w1, "w3": w3, "w2": w2, "dy": dy, "y": torch.stack(outs),
        "dx": grads[0], "dw1": grads[1], "dw3": grads[2], "dw2": grads[3],
    }
    for i in range(K + 1):
        name = f"task.{i}.gate." if i < K else "shared.gate."
        tensors[name + "w"], tensors[name + "b"] = gates[i]
        tensors["d" + name + "w"], tensors["d" + name + "b"] = grads[4 + 2 * i], grads[5 + 2 * i]
    save(out, "ple_layer", tensors)

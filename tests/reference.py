"""An independent NumPy forward pass of the tutorial's ViT, from a flat {name: array} dict (tutorial names)."""

import math

import numpy as np


def layer_norm(x, gamma, beta, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def gelu(x, form):
    if form == "tanh":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1 + erf(x / math.sqrt(2)))


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def vit_forward(p, x, *, num_heads, eps=1e-7, gelu_form="tanh", pool="cls"):
    """Logits (B, K) in float64, written from the ViT paper's equations, not from ms_vit's code."""
    p = {k: v.astype(np.float64) for k, v in p.items()}
    x = x.astype(np.float64)
    kernel, bias = p["patch_embedding.conv.weight"], p["patch_embedding.conv.bias"]
    d, c, ps, _ = kernel.shape
    b, _, h, w = x.shape
    gh, gw = h // ps, w // ps
    tokens = np.zeros((b, gh * gw, d))
    for i in range(gh):
        for j in range(gw):
            patch = x[:, :, i * ps:(i + 1) * ps, j * ps:(j + 1) * ps]
            tokens[:, i * gw + j] = np.einsum("bchw,dchw->bd", patch, kernel) + bias
    z = np.concatenate([np.repeat(p["cls"], b, axis=0), tokens], axis=1) + p["pos_embedding"]
    n_layers = len({k.split(".")[2] for k in p if k.startswith("transformer.layers.")})
    for i in range(n_layers):
        pre = f"transformer.layers.{i}."
        y = layer_norm(z, p[pre + "0.cell.0.gamma"], p[pre + "0.cell.0.beta"], eps)
        qkv = y @ p[pre + "0.cell.1.qkv.weight"].T + p[pre + "0.cell.1.qkv.bias"]
        n = z.shape[1]
        qkv = qkv.reshape(b, n, 3, num_heads, d // num_heads).transpose(2, 0, 3, 1, 4)
        attn = softmax(qkv[0] @ qkv[1].transpose(0, 1, 3, 2) / math.sqrt(d // num_heads))
        out = (attn @ qkv[2]).transpose(0, 2, 1, 3).reshape(b, n, d)
        z = z + out @ p[pre + "0.cell.1.out.weight"].T + p[pre + "0.cell.1.out.bias"]
        y = layer_norm(z, p[pre + "1.cell.0.gamma"], p[pre + "1.cell.0.beta"], eps)
        y = gelu(y @ p[pre + "1.cell.1.dense1.weight"].T + p[pre + "1.cell.1.dense1.bias"], gelu_form)
        z = z + y @ p[pre + "1.cell.1.dense2.weight"].T + p[pre + "1.cell.1.dense2.bias"]
    z = layer_norm(z, p["norm.gamma"], p["norm.beta"], eps)
    feat = z[:, 0] if pool == "cls" else z[:, 1:].mean(1)
    return feat @ p["dense.weight"].T + p["dense.bias"]


def params_of(net):
    return {p.name: p.asnumpy() for p in net.get_parameters()}

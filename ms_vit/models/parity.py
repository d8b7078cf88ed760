"""Logit parity against HF transformers' ViT (used by the tests and bench/parity_hf.py; needs torch)."""

from __future__ import annotations

import numpy as np


def hf_parity(torch, transformers, folder: str, *, hidden: int, layers: int, heads: int, mlp: int, image: int,
              patch: int, labels: int, batch: int = 2, seed: int = 0) -> dict:
    """Random weights for an HF ViTForImageClassification of this size, saved with save_pretrained, loaded by
    ms_vit.from_pretrained; returns the max abs logit difference on a random batch, and the max abs logit."""
    import mindspore as ms

    from ms_vit.models.factory import from_pretrained

    torch.manual_seed(seed)
    config = transformers.ViTConfig(image_size=image, patch_size=patch, hidden_size=hidden, num_hidden_layers=layers,
                                    num_attention_heads=heads, intermediate_size=mlp, num_labels=labels)
    reference = transformers.ViTForImageClassification(config).eval()
    with torch.no_grad():  # the default init leaves biases and LayerNorms trivial: randomise everything
        for param in reference.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    reference.save_pretrained(folder)
    x = np.random.default_rng(seed).standard_normal((batch, 3, image, image)).astype(np.float32)
    with torch.no_grad():
        expected = reference(pixel_values=torch.from_numpy(x)).logits.numpy()
    net = from_pretrained(folder)
    net.set_train(False)
    got = net(ms.Tensor(x)).asnumpy()
    return {"max_abs_diff": float(np.abs(got - expected).max()), "max_abs_logit": float(np.abs(expected).max()),
            "format": net.load_report.format, "layer_norm_eps": net.config.layer_norm_eps, "gelu": net.config.gelu}

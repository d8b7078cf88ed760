"""Logit parity of ms_vit against HF transformers' ViTForImageClassification (needs requirements-dev.txt).

    python bench/parity_hf.py            # a tiny config and a ViT-B/16-sized one (random weights)
"""

import tempfile


SIZES = {
    "tiny (dim 32, 2 layers, 4 heads, 32 px)": dict(hidden=32, layers=2, heads=4, mlp=64, image=32, patch=8, labels=10),
    "ViT-B/16 (dim 768, 12 layers, 12 heads, 224 px)": dict(hidden=768, layers=12, heads=12, mlp=3072, image=224,
                                                           patch=16, labels=1000),
}


def main():
    import torch
    import transformers

    import ms_vit
    from ms_vit.models.parity import hf_parity

    ms_vit.set_up(None, "graph")
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    for name, size in SIZES.items():
        with tempfile.TemporaryDirectory() as folder:
            r = hf_parity(torch, transformers, folder, **size)
        bound = 1e-4 * max(1.0, r["max_abs_logit"])
        print(f"{name}: max |logit diff| {r['max_abs_diff']:.3g} (max |logit| {r['max_abs_logit']:.3g}, bound "
              f"{bound:.3g}: {'pass' if r['max_abs_diff'] <= bound else 'FAIL'}); loaded as {r['format']}, "
              f"LayerNorm eps {r['layer_norm_eps']:g}, GELU {r['gelu']}")


if __name__ == "__main__":
    main()

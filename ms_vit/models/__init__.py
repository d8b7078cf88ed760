"""The network: the ViT Cell and its layers (vit.py, layers.py, token_learner.py), building it from a preset or from
weights (factory.py), its cost from the configuration alone (complexity.py), logit parity with transformers (parity.py)."""

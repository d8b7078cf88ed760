"""Fine-tuning: the run (run.py) and what it is made of: the training step (step.py), optimiser and schedule
(optim.py), loss, EMA, fine-tuning modes (modes.py, lora.py, linear_probe.py), AMP, callbacks, data parallelism,
the compile cache and TensorBoard."""

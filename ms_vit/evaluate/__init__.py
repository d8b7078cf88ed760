"""After training: evaluation on a folder (run.py), shared metrics (metrics.py), predictions drawn on images
(infer.py), the mistakes gallery and forward timing."""

"""Images in, batches out: ImageFolder pipelines (folder.py), the sources training reads (sources.py), CIFAR-10
(cifar.py), augmentation (augment.py, mixup.py), the data check (check.py), class labels (labels.py), the demo set
(demo.py)."""

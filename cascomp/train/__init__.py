"""The training loops: the search's steps, fine-tuning with distillation, evaluation, BatchNorm
re-estimation, probes (plans measured without training), layer reconstruction, checkpoints, progress lines,
and the demo network's training."""

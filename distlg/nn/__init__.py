"""The model room: the Local-Global SIREN and its baselines (``model``), its hand-fused training
step and prediction (``fused``), and widths from a parameter budget (``budget``).

It may import: torch, numpy and ``distlg.errors``. It never imports torch.distributed or
accelerate (how the model is parallelised lives in ``distlg.training.distributed``), nor signals, stores,
model directories or training: a model knows coordinates and values, not where they come from.
"""

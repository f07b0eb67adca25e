"""The model room: which layers a model has (``architecture``), the one forward pass and the
matmul policies that compute it (``layers``), the Local-Global SIREN and its baselines as a
module (``model``: parameters, initialisation, ``INR.forward``), the training step that runs
that forward through a tape and backpropagates by hand (``fused``), the lattice, widths from a
parameter budget (``budget``) and INCODE's harmonizer (``incode``).

It may import: torch, numpy, ``distlg.errors`` and ``distlg.defaults`` (the choices and
constants every layer shares: archs, merges, w0, hidden layers). It never imports torch.distributed or
accelerate (how the model is parallelised lives in ``distlg.training.distributed``), nor signals, stores,
model directories or training: a model knows coordinates and values, not where they come from.
"""

"""The training wing: from a config and a signal to a trained model directory.

``plan`` (grid, widths, steps and rates from the settings and the signal's kind) ->
``distributed`` (``World``: the process group, the device, the one all-reduce of the replicated
gradients) -> ``steps`` (which training step runs: the fused one, the autograd one under bf16
or Triton, CUDA graphs) -> ``optim`` (Adam groups, the schedule, the step loop) ->
``measured`` (the tasks whose loss sees the model through measurements: super-resolution, CT)
-> ``evaluation`` (the trainer's score) -> ``checkpoint`` (every worker writes its own
partitions, resume on any worker count) -> ``rundir`` (``--out`` claimed, and an old run
replaced only where distlg wrote it) -> ``trainer`` (``train``: the run, its log and
progress) and ``extend`` (new partitions for appended samples, through the same step loop).

It may import: every room below it (``distlg.data``, ``distlg.nn``, ``distlg.kernels``,
``distlg.modeldir``, ``distlg.rendering`` to evaluate) and the ground-floor helpers; torch,
torch.distributed and accelerate (these two in ``distributed`` only). Nothing below imports
it; only ``commands`` and the package face above do.
"""

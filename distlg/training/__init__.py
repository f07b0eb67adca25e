"""The training wing: from a config and a signal to a trained model directory.

``plan`` (the settings resolved for the signal, ``Config.resolved``; grid, widths, steps and
rates) -> ``distributed`` (``World``: the process group, the device, the one all-reduce of the
replicated gradients) -> ``steps`` (which training step runs: the fused one, or
``INR.forward`` under autograd with the bf16 or Triton matmul policy; CUDA graphs; ``exact``:
an INCODE model's step in float64, summed exactly over workers) ->
``optim`` (Adam groups, the schedule, the step loop) -> ``measured`` (the tasks whose loss
sees the model through measurements: super-resolution, CT) -> ``evaluation`` (the trainer's
score) -> ``checkpoint`` (every worker writes its own partitions, resume on any worker count)
-> ``rundir`` (``--out`` claimed, and an old run replaced only where distlg wrote it) ->
``tracking`` (what a run tells its user) -> ``trainer`` (``train``: the run) and
``extend`` (new partitions for appended samples, through the same step loop).

It may import: every room below it (``distlg.data``, ``distlg.nn``, ``distlg.kernels``,
``distlg.modeldir``, ``distlg.rendering`` to evaluate) and the ground-floor helpers; torch,
torch.distributed and accelerate (these two in ``distributed`` only). Nothing below imports
it; only ``commands`` and the package face above do.
"""

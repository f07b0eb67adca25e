"""Optional fast paths for GPUs (Triton), each beside the torch path it must match:
``grouped_mlp`` (the kernel) and ``policy`` (``Triton``, the matmul policy ``INR.forward``
takes under ``--kernel triton``).

Nothing here is imported unless asked for (``--kernel triton``): the torch path stays the
reference, the CPU path and the default on CUDA until a GPU measurement says otherwise.

It may import: ``distlg.nn`` (the shapes and activations it must match) and ``distlg.errors``;
torch and triton. It never imports signals, model directories, rendering or training.
"""

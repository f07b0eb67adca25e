"""Optional fast paths for GPUs (Triton), each beside the torch path it must match.

Nothing here is imported unless asked for (``--kernel triton``): the torch path stays the
reference, the CPU path and the default on CUDA until a GPU measurement says otherwise.
"""

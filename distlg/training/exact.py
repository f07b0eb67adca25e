"""Replicated gradients summed exactly: the training step of INCODE models, whose N workers
then take the steps one process takes.

An INCODE model's harmonizer (231 K extractor weights for images) takes all of its gradient
through 8-12 activation coefficients, and Adam steps each weight by about the learning rate
whatever the size of its gradient. Training amplifies any rounding-level difference: in one
process, changing the coefficients' gradient by 1e-7 (relative) at every step moved the
weights by up to 60 % after 100 steps, and 2 workers, whose float32 partial sums round
differently from one process's, drifted ~1 % apart within tens of steps (SIREN models, without
a harmonizer, stayed within 2e-5 under the same change). Computing each partition's part
alone does not help: a batched product's result for one partition depends, in the last bit,
on its place in the batch (measured for some widths on the CPU).

So this step runs the model's own forward (``INR.forward`` given ``tensors``) in float64: a
float64 copy of every tensor and of the coefficients is the autograd leaf, every sum (over
samples, over partitions, over workers: ``GlobalGradBucket`` with ``exact``) is taken in
float64, and each gradient is rounded to float32 once, the replicated ones after the sum over
workers. Float64 results taken in another order differ by ~1e-16 (relative), which the rounding
to float32 almost always removes, so 2 workers and one process take the same steps (tests: to
1e-5 over 100 steps for every INCODE architecture; bit for bit in practice). The cost, INCODE
models only: the model's part of the step in float64 (the harmonizer, most of an INCODE step,
stays in float32, the same on every worker), a float64 copy of the tensors per step, and a
float64 bucket (twice the bytes on the wire).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..nn.model import INR
from .distributed import GlobalGradBucket
from .steps import ensure_grads

if TYPE_CHECKING:
    from ..nn.incode import StepCoefficients


class ExactStep:
    """The training step of an INCODE model on plain samples (a ``StepFn``): the gradient of
    ``scale * sse``, computed in float64, the local tensors' rounded into their ``.grad``, the
    replicated ones' (and the coefficients') added to ``bucket``'s float64 sums (an ``exact``
    bucket rounds them after the all-reduce)."""

    def __init__(self, coefficients: "StepCoefficients", bucket: GlobalGradBucket):
        self.coefficients, self.bucket = coefficients, bucket

    def __call__(self, model: INR, coords: Tensor, values: Tensor, scale: float) -> Tensor:
        ensure_grads(model)
        wide = {name: _leaf(p) for name, p in model.named_tensors()}
        with torch.enable_grad():
            coefficients = _leaf(self.coefficients())                  # the harmonizer's output
            out = model(coords.to(torch.float64), coefficients=coefficients, tensors=wide)
            err = out - values.to(torch.float64)
            sse = err.pow(2).sum()
            torch.autograd.backward(sse * scale)
        for name, p in model.named_tensors():
            if name in model.arch.local_shapes():
                p.grad.add_(wide[name].grad)
            else:
                self.bucket.sum_of(p).add_(wide[name].grad)
        self.bucket.sum_of(self.coefficients.leaf).add_(coefficients.grad)
        return sse.detach()


def _leaf(t: Tensor) -> Tensor:
    return t.detach().to(torch.float64).requires_grad_()

"""Training: one process, or many under ``accelerate launch`` (each owning a shard).

    distlg train                                   # one process, embedded default image
    distlg train run.yaml --steps 500              # a config file with overrides
    accelerate launch --config_file launch/cpu.yaml -m distlg train run.yaml
                                                   # 2 CPU workers (gloo); see launch/ for GPUs,
                                                   # several machines and SLURM

Every step (``optim.run_steps``, the loop ``extend`` runs too): sample this worker's
partitions -> fused forward/backward -> one all-reduce of the replicated gradients (plus the
loss) -> Adam. Checkpoints and the final model are written one file per partition by the worker
that owns it.
"""

from __future__ import annotations

import contextlib
import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import Config, ConfigError
from ..data.pack import open_pack
from ..data.sampler import make_sampler
from ..data.signal import Signal, SignalInfo
from ..data.store import open_signal
from ..errors import DistlgError, WorkerLost
from ..metrics import Evaluation
from ..modeldir.shards import owners
from ..nn.model import INR
from ..outputs import exclusive
from . import checkpoint, measured, rundir
from .distributed import GlobalGradBucket, World
from .evaluation import evaluate, evaluate_sampled, score_subset
from .exact import ExactStep
from .optim import make_optimizer, run_steps
from .plan import Plan, make_plan
from .steps import training_step
from .tracking import Tracker, TrainingDiverged, diverged_message, fixed_views


@dataclass
class TrainResult:
    """What a run reports (on every worker)."""

    plan: Plan
    final: Evaluation
    steps_run: int
    seconds: float
    samples_per_second: float
    """Training samples per second, summed over workers."""
    allreduce_bytes: int
    """Bytes each worker all-reduces per step (replicated gradients and two statistics)."""
    peak_rss_mib: list[float]
    """Peak resident memory of each worker."""
    history: list[dict] = field(default_factory=list)
    sampler_stats: dict = field(default_factory=dict)
    """This worker's streaming sampler's counts (``stream.StreamingSampler.stats``: seconds the
    loop waited for the first window and for later ones, chunks and bytes read); empty for the
    resident sampler."""
    model_dir: Path | None = None
    model: INR | None = None
    phases: dict = field(default_factory=dict)
    """Seconds this worker spent in each part of the command: startup (signal, plan, model,
    sampler), steps, checkpoints, model (the final model directory) and score (the final
    evaluation)."""


def train(config: Config, world: World | None = None, signal: Signal | None = None) -> TrainResult:
    """Run ``config`` in this process (joining the launched job, if any)."""
    out = Path(config.run.out)
    config = launcher_precision(config)
    _check_cuda_options(config)
    old_run = rundir.claim(config)
    rank = world.rank if world else int(os.environ.get("RANK", "0"))
    # the main worker holds --out's lock for the whole run: a second run there is refused
    with exclusive(out, "--out") if rank == 0 else contextlib.nullcontext():
        own_world = world is None
        world = world or World.start(config.train.device,
                                     log_dir=str(out) if config.run.tensorboard else None)
        try:
            return _train(config, world, signal, out, old_run)
        finally:
            if own_world:
                world.close()


def _check_finite(model: INR, world: World, step: int, out: Path) -> None:
    """Stop, on every worker at once, before weights that are not finite reach a checkpoint
    or the model (one host read per checkpoint, none per step)."""
    ok = bool(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all())
    if not all(world.all_gather(ok)):
        raise TrainingDiverged(diverged_message(step, out))


def launcher_precision(config: Config) -> Config:
    """Honour accelerate's ``--mixed_precision`` (``ACCELERATE_MIXED_PRECISION``, also from a
    config file): bf16 becomes ``--precision bf16`` (the step keeps sines, biases and the loss
    in float32, which autocast would not); fp16 and fp8 are refused, as SIREN's sine
    pre-activations (w0 x ...) need more range and precision than they hold."""
    wanted = os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower()
    if wanted == "no" or wanted == config.train.precision:
        return config
    if wanted != "bf16":
        raise ConfigError(f"accelerate's --mixed_precision {wanted} is not supported: SIREN's sine "
                          "pre-activations need float32; launch with --mixed_precision bf16 (the "
                          "same as --precision bf16) or no")
    if config.train.precision != "fp32":
        raise ConfigError(f"accelerate's --mixed_precision bf16 and --precision "
                          f"{config.train.precision} disagree; give one of them")
    if os.environ.get("RANK", "0") == "0":
        print("distlg: accelerate's --mixed_precision bf16: training with --precision bf16")
    return config.replace(precision="bf16")


def _check_cuda_options(config: Config) -> None:
    """Refuse the CUDA-only options where they cannot run, before --out is touched (the
    step's own checks, ``steps.training_step``, come after the device is chosen)."""
    t = config.train
    wanted = [flag for flag, on in (("--device cuda", t.device == "cuda"),
                                    ("--kernel triton", t.kernel == "triton"),
                                    ("--cuda-graph", t.cuda_graph)) if on]
    if wanted and (t.device == "cpu" or not torch.cuda.is_available()):
        where = "--device cpu" if t.device == "cpu" else "this machine has none"
        raise ConfigError(f"{wanted[0]} needs a CUDA device ({where})")
    if t.cuda_graph and config.model.arch.endswith("incode"):
        raise ConfigError("--cuda-graph: INCODE models compute their coefficients in each step "
                          "and run without a graph; leave --cuda-graph off")


def _train(config: Config, world: World, signal: Signal | None, out: Path,
           old_run: list[Path]) -> TrainResult:
    t0 = time.perf_counter()
    phases = dict.fromkeys(("startup", "steps", "checkpoints", "model", "score"), 0.0)
    torch.set_num_threads(config.train.threads or world.default_threads())
    signal = signal or open_signal(config.signal.path)
    plan = make_plan(config, signal)
    config = plan.settings  # every default resolved for the signal: what the run reads
    pids = owners(plan.grid, world.size)[1][world.rank]  # whole shards: one writer each
    model = INR(plan.arch, pids, seed=config.train.seed).to(world.device)
    coefficients = _attach_harmonizer(model, config, signal, world.device)
    exact = coefficients is not None and not measured.operator(signal) \
        and config.train.precision != "bf16" and config.train.kernel == "torch"  # training.exact
    bucket = GlobalGradBucket(model, world, tensors=None if coefficients is None else
                              model.shared_parameters() + [coefficients.leaf], exact=exact)
    optimizer = make_optimizer(model, plan.lr, plan.global_lr)
    info = signal.info
    start = _resume(config, model, optimizer, world, plan, info) if config.run.resume else 0
    source = None
    if config.signal.pack:
        source = open_pack(config.signal.pack).source(signal, plan.grid, world.size, world.rank)
    sampler = make_sampler(signal, plan.grid, pids, plan.samples_per_partition, config.train.seed,
                           config.train.memory_budget, world.device, source=source)
    scale = 1.0 / (plan.samples_per_step * signal.channels)
    forward_backward = training_step(config.train.precision, config.train.kernel, world.device,
                                     coefficients, config.train.cuda_graph)
    if exact:
        forward_backward = ExactStep(coefficients, bucket)
    if measured.operator(signal):  # the loss sees the model through the store's measurements
        if config.train.cuda_graph:
            raise ConfigError("--cuda-graph: a store of measurements (CT) trains without a graph")
        sampler, forward_backward, scale = measured.prepare(signal, plan, pids, world, config.train,
                                                           sampler, scale, coefficients)
    if old_run and world.is_main:  # --overwrite: everything is checked, the old run goes now
        rundir.replace(old_run)
    world.barrier()
    tracker = Tracker(world, config, plan, sampler, bucket, start)
    phases["startup"] = time.perf_counter() - t0
    pictures = (lambda: fixed_views(model, plan.grid, signal, world)) if measured.references(signal) else None

    def save(step: int) -> None:
        t = time.perf_counter()
        model.store_coefficients()
        _check_finite(model, world, step, out)
        try:
            checkpoint.save(out, step, model, optimizer, world, plan.grid, info, config.to_dict())
        except OSError as exc:  # a full disk, a quota: the checkpoints so far stay whole
            raise DistlgError(f"cannot write the checkpoint of step {step} into "
                              f"{out / 'checkpoints'} ({exc.strerror or exc}); make room there "
                              "and run again with --resume") from None
        phases["checkpoints"] += time.perf_counter() - t

    def after(done: int, sse: torch.Tensor) -> None:
        nonlocal step
        step = done
        if config.train.eval_every and done % config.train.eval_every == 0 and done < plan.steps:
            tracker.eval(done, lambda: _evaluate(model, plan, signal, world, config, full=False),
                         pictures)
        tracker.step(done, sse, scale)
        if config.run.checkpoint_every and done % config.run.checkpoint_every == 0:
            save(done)

    step = start
    try:
        run_steps(model, optimizer, sampler, plan.lr_at, range(start, plan.steps), scale,
                  _reduce(bucket, coefficients), after, forward_backward)
        seconds = tracker.elapsed()
        phases["steps"] = seconds - phases["checkpoints"]
        if not (config.run.checkpoint_every and plan.steps % config.run.checkpoint_every == 0):
            save(plan.steps)  # also stores an INCODE model's final coefficients
        t = time.perf_counter()
        model_dir = checkpoint.write_model(out / "model", model, world, plan.grid, info)
        phases["model"] = time.perf_counter() - t
        t = time.perf_counter()
        final = tracker.eval(plan.steps, lambda: _evaluate(model, plan, signal, world, config,
                                                           full=True), pictures)
        phases["score"] = time.perf_counter() - t
    except WorkerLost as exc:  # a peer died in a step, a checkpoint's barrier or the final score
        last = checkpoint.latest(out)
        where = f"the checkpoint of {last.name}" if last else "the start (no checkpoint yet)"
        raise WorkerLost(f"{exc} at step {step}; restart with --resume to continue from {where}") from None
    except KeyboardInterrupt:
        if not world.distributed:  # one process: keep what was trained
            save(step)
            tracker.close()
            print(f"interrupted: checkpoint of step {step} written to {out / 'checkpoints'}")
        raise
    finally:
        sampler.close()
    tracker.close()
    rss = world.all_gather(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    steps_run = plan.steps - start
    return TrainResult(plan, final, steps_run, seconds,
                       steps_run * plan.samples_per_step / max(seconds, 1e-9), bucket.bytes_per_step,
                       rss, tracker.history, dict(getattr(sampler, "stats", {})), model_dir, model,
                       phases)


def _evaluate(model: INR, plan: Plan, signal: Signal, world: World, config: Config,
              full: bool) -> Evaluation:
    """Score the model: every partition, or a fixed subset of them on large signals
    (``--eval``); each worker scores the partitions it holds, the sums are all-reduced. On a
    --downsample store the model's footprint means are scored (``measured.score_offsets``)."""
    # host sums travel as objects: exact in float64 on NCCL too, which reduces CUDA tensors only
    reduce = world.sum_values
    model.store_coefficients()
    if not measured.references(signal):  # a measured sinogram: no image to score against
        return measured.evaluate_projections(model, signal, plan, world)
    subset = score_subset(plan.grid, signal.channels, config.train.eval)
    offsets = measured.score_offsets(signal, plan.grid)
    if subset is not None:
        return evaluate_sampled(model, plan.grid, signal, subset, reduce=reduce, offsets=offsets)
    return evaluate(model, plan.grid, signal, reduce=reduce, full=full,
                    progress=world.is_main and config.run.progress, offsets=offsets,
                    gather=_sum_arrays(world) if world.collectives else None)


def _sum_arrays(world: World):
    """Sum an array over workers (one all-reduce on the group's device): the reconstruction
    each worker filled at its own partitions' positions becomes the whole one, for SSIM."""
    def gather(array):
        tensor = world.all_reduce_(torch.from_numpy(array).to(world.device))
        return tensor.cpu().numpy()
    return gather


def _reduce(bucket: GlobalGradBucket, coefficients):
    """The step's all-reduce; an INCODE run then backpropagates the summed coefficient
    gradient through its harmonizer (``StepCoefficients``)."""
    if coefficients is None:
        return bucket.reduce

    def reduce(*extras):
        summed = bucket.reduce(*extras)
        coefficients.backward()
        return summed

    return reduce


def _attach_harmonizer(model: INR, config: Config, signal: Signal, device: torch.device):
    """An INCODE model's harmonizer, attached to ``model`` (``distlg.nn.incode``); returns
    what computes the coefficients each step (``StepCoefficients``; None for SIREN models)."""
    if not model.arch.incode:
        for option, value in (("weights", config.model.harmonizer_weights),
                              ("bias", config.model.harmonizer_bias)):
            if value:
                raise ConfigError(f"--harmonizer-{option} is for the INCODE archs, not {model.arch.arch}")
        return None
    from ..nn import incode

    preview = measured.harmonizer_input(signal, incode.PREVIEW_PIXELS)
    preview = (incode.read_preview(signal) if preview is None else preview).to(device)
    harmonizer = incode.build(model.arch, preview, config.train.seed, signal.info.sample_rate,
                              config.model.harmonizer_weights, config.model.harmonizer_bias).to(device)
    model.attach_harmonizer(harmonizer)
    return incode.StepCoefficients(harmonizer)


def _resume(config: Config, model: INR, optimizer: torch.optim.Optimizer, world: World,
            plan: Plan, info: SignalInfo) -> int:
    path = checkpoint.latest(config.run.out)
    if path is None:
        if world.is_main:
            print(f"no complete checkpoint in {config.run.out}: starting from step 0")
        return 0
    training = checkpoint.restore(path, model, optimizer, plan.grid, info)
    if int(training["step"]) > plan.steps:
        raise ConfigError(f"--steps {plan.steps} is below the step of the checkpoint to resume, "
                          f"{training['step']} ({path}); give more steps")
    if world.is_main:
        print(f"resuming from {path} (step {training['step']}, written by "
              f"{training['world_size']} worker(s), now {world.size})")
    return int(training["step"])

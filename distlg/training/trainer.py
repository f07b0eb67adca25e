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

import os
import resource
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import Config, ConfigError
from ..data.pack import open_pack
from ..data.sampler import make_sampler
from ..data.signal import Signal, SignalInfo
from ..data.store import open_signal
from ..errors import WorkerLost
from ..geometry import shard
from ..metrics import Evaluation
from ..nn.model import INR
from . import checkpoint, measured
from .distributed import GlobalGradBucket, World
from .evaluation import evaluate, evaluate_sampled, score_subset
from .exact import ExactStep
from .optim import make_optimizer, run_steps
from .plan import Plan, make_plan
from .steps import training_step
from .tracking import Tracker, TrainingDiverged, diverged_message


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


def train(config: Config, world: World | None = None, signal: Signal | None = None) -> TrainResult:
    """Run ``config`` in this process (joining the launched job, if any)."""
    out = Path(config.run.out)
    _check_cuda_options(config)
    _claim_out(config, world.rank if world else int(os.environ.get("RANK", "0")))
    own_world = world is None
    world = world or World.start(config.train.device,
                                 log_dir=str(out) if config.run.tensorboard else None)
    try:
        return _train(config, world, signal, out)
    finally:
        if own_world:
            world.close()


def _check_finite(model: INR, world: World, step: int, out: Path) -> None:
    """Stop, on every worker at once, before weights that are not finite reach a checkpoint
    or the model (one host read per checkpoint, none per step)."""
    ok = bool(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all())
    if not all(world.all_gather(ok)):
        raise TrainingDiverged(diverged_message(step, out))


RUN_ENTRIES = ("checkpoints", "model", "history.jsonl", "tensorboard")
"""What a run writes into its --out (``--overwrite`` deletes them)."""


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


def _claim_out(config: Config, rank: int) -> None:
    """Refuse an --out that holds a run unless --resume continues it or --overwrite replaces
    it; with --overwrite the main worker deletes the old run (before any worker writes)."""
    out, run = Path(config.run.out), config.run
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a run directory")
    if run.resume and run.overwrite:
        raise ConfigError("--resume continues the run in --out, --overwrite replaces it: give one")
    held = [name for name in RUN_ENTRIES if (out / name).exists()]
    if not held or run.resume:
        return
    if not run.overwrite:
        raise ConfigError(f"{out} holds a run already ({held[0]}); pass --resume to continue it "
                          "or --overwrite to replace it")
    if rank == 0:
        for name in held:
            path = out / name
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


def _train(config: Config, world: World, signal: Signal | None, out: Path) -> TrainResult:
    torch.set_num_threads(config.train.threads or world.default_threads())
    signal = signal or open_signal(config.signal.path)
    plan = make_plan(config, signal)
    pids = shard(plan.grid, world.size)[world.rank]
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
                           int(config.train.memory_budget_gib * 2**30), world.device, source=source)
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
    tracker = Tracker(world, config, plan, sampler, bucket, start)

    def save(step: int) -> None:
        model.store_coefficients()
        _check_finite(model, world, step, out)
        checkpoint.save(out, step, model, optimizer, world, plan.grid, info, config.to_dict())

    def after(done: int, sse: torch.Tensor) -> None:
        nonlocal step
        step = done
        if config.train.eval_every and done % config.train.eval_every == 0 and done < plan.steps:
            tracker.eval(done, lambda: _evaluate(model, plan, signal, world, config, full=False))
        tracker.step(done, sse, scale)
        if config.run.checkpoint_every and done % config.run.checkpoint_every == 0:
            save(done)

    step = start
    try:
        run_steps(model, optimizer, sampler, plan.lr_at, range(start, plan.steps), scale,
                  _reduce(bucket, coefficients), after, forward_backward)
    except WorkerLost as exc:
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
    seconds = tracker.elapsed()
    if not (config.run.checkpoint_every and plan.steps % config.run.checkpoint_every == 0):
        save(plan.steps)  # also stores an INCODE model's final coefficients
    model_dir = checkpoint.write_model(out / "model", model, world, plan.grid, info)
    final = tracker.eval(plan.steps, lambda: _evaluate(model, plan, signal, world, config,
                                                       full=not world.distributed))
    tracker.close()
    rss = world.all_gather(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    steps_run = plan.steps - start
    return TrainResult(plan, final, steps_run, seconds,
                       steps_run * plan.samples_per_step / max(seconds, 1e-9), bucket.bytes_per_step,
                       rss, tracker.history, dict(getattr(sampler, "stats", {})), model_dir, model)


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
                    progress=world.is_main and config.run.progress, offsets=offsets)


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
    harmonizer = incode.build(model.arch, preview, config.train.seed, signal.meta.get("sample_rate"),
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

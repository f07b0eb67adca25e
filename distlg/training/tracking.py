"""What a run tells its user: the opening lines, the progress bar, the loss and scores in
``history.jsonl``, and TensorBoard through accelerate's tracker. The main worker does the
telling; every worker keeps the history (the loss is all-reduced, so it is the same)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..config import Config
from ..data.signal import Signal
from ..errors import DistlgError
from ..geometry import PartitionGrid
from ..metrics import Evaluation
from ..nn.model import INR
from ..progress import progress
from ..rendering.sampled import render_positions, take
from ..rendering.writers import to_8bit
from .checkpoint import latest
from .distributed import World
from .plan import Plan


class TrainingDiverged(DistlgError):
    """The loss or the weights stopped being finite numbers (NaN or infinity)."""


def diverged_message(step: int, out: Path) -> str:
    last = latest(out)
    kept = f"the last good checkpoint is {last}" if last else "no checkpoint was written"
    return (f"the loss is not finite (NaN or inf) at step {step}; training stopped and {kept}; "
            "check the signal for NaN values or lower --lr")


THIN_LOCAL_WIDTH = 4
"""Local sub-networks narrower than this fit poorly (width 1 on a 64x48 image at 5 x 7
partitions: 9.0 dB where the default 2 x 2 grid reached 13.5): the run says so."""

def _record_step(line: str) -> int | None:
    """The step of one history line; None for a line a killed run left half-written."""
    try:
        step = json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return None
    return step if isinstance(step, int) else None


def _open_history(path: Path, start: int):
    """The run's JSON-lines log, keeping only whole records up to ``start`` when resuming."""
    kept = []
    if start and path.is_file():
        lines = path.read_text(errors="replace").splitlines()
        kept = [line for line in lines if (step := _record_step(line)) is not None and step <= start]
    fh = open(path, "w")
    fh.writelines(line + "\n" for line in kept)
    return fh


class Tracker:
    """Progress bar, console and TensorBoard logging: on the main worker only."""

    def __init__(self, world: World, config: Config, plan: Plan, sampler, bucket, start: int):
        self.world, self.config, self.plan, self.history = world, config, plan, []
        self.start_step = start
        self.bar = None
        self.tb = world.accelerator is not None and config.run.tensorboard
        self.t0, self.paused = time.perf_counter(), 0.0
        self.cpu0, self.cpu_paused = time.process_time(), 0.0
        self.last_log = (start, 0.0)  # (step, training time) at the last logged step
        self.log_file = None
        if not world.is_main:
            return
        out = Path(config.run.out)
        out.mkdir(parents=True, exist_ok=True)
        self.log_file = _open_history(out / "history.jsonl", start)
        g = plan.grid
        print(f"distlg: {plan.arch.arch} {plan.arch.local_width or '-'} local / "
              f"{plan.arch.global_width or '-'} global wide, {plan.arch.total_params(g.num_partitions):,} "
              f"parameters; grid {g.factors} = {g.num_partitions} partitions, halo {g.overlaps}; "
              f"{world.size} worker(s) on {world.device}; sampler {sampler.mode}; "
              f"{plan.samples_per_step:,} samples/step; all-reduce {bucket.bytes_per_step:,} B/step")
        if 0 < plan.arch.local_width < THIN_LOCAL_WIDTH:
            print(f"distlg: warning: local sub-networks only {plan.arch.local_width} wide: the budget "
                  f"is thin for {g.num_partitions} partitions; fewer partitions (--factors, "
                  "--partition-size) or more --params give each more")
        shared = ""
        if plan.arch.base == "local-global":
            a = plan.arch
            where = (f"on a {'x'.join(map(str, a.lattice))} lattice per partition" if a.on_lattice
                     else "at every sample")
            print(f"distlg: recipe {config.model.recipe}: merge {a.merge}, global branch {where}")
            shared = f" (replicated part x{plan.global_lr:g})"
        print(f"distlg: {plan.steps} steps, Adam lr {plan.lr:g}{shared}, {plan.schedule} schedule")
        if self.tb:
            flat = {f"{s}.{k}": (v if isinstance(v, (int, float, str, bool)) else str(v))
                    for s, sec in config.to_dict().items() for k, v in sec.items()}
            world.accelerator.init_trackers("tensorboard", config=flat)
        if config.run.progress:
            self.bar = progress(plan.steps, "step", "train", initial=start, dynamic_ncols=True)
        self.t0, self.cpu0 = time.perf_counter(), time.process_time()

    def elapsed(self) -> float:
        """Training time so far: wall time less the time spent evaluating."""
        return time.perf_counter() - self.t0 - self.paused

    def cpu(self) -> float:
        """CPU time this process spent training so far (less evaluating): what the training
        would take on cores of its own, where the machine is shared (benchmarks compare it)."""
        return time.process_time() - self.cpu0 - self.cpu_paused

    def step(self, step: int, sse: torch.Tensor, scale: float) -> None:
        """``sse``: the step's summed squared error (a tensor on the device), read here only on
        the steps that are logged, so other steps never wait for the device."""
        if self.bar is not None:
            self.bar.update(1)
        if step % self.config.train.log_every and step != self.plan.steps:
            return
        loss = float(sse[0]) * scale
        if not math.isfinite(loss):  # the same on every worker: the loss is all-reduced
            raise TrainingDiverged(diverged_message(step, Path(self.config.run.out)))
        self._record({"step": step, "loss": loss, "time": self.elapsed(), "cpu": self.cpu()})
        if self.world.is_main:
            if self.bar is not None:
                self.bar.set_postfix(loss=f"{loss:.3g}")
            if self.tb:
                self.world.accelerator.log(self._scalars(step, loss), step=step)

    def _scalars(self, step: int, loss: float) -> dict[str, float]:
        """Loss, learning rate and training samples per second (all workers, since the last
        logged step, evaluation time left out)."""
        (before, then), now = self.last_log, self.elapsed()
        self.last_log = (step, now)
        rate = (step - before) * self.plan.samples_per_step / max(now - then, 1e-9)
        return {"train/loss": loss, "train/lr": self.plan.lr_at(step), "train/samples_per_s": rate}

    def eval(self, step: int, evaluate: Callable[[], Evaluation],
             pictures: Callable[[], dict[str, np.ndarray]] | None = None) -> Evaluation:
        """Run ``evaluate`` off the training clock and report its result; with TensorBoard
        also ``pictures`` (run on every worker: it gathers), logged by the main worker."""
        t0, cpu0 = time.perf_counter(), time.process_time()
        ev = evaluate()
        views = pictures() if pictures is not None and self.config.run.tensorboard else None
        self.paused += time.perf_counter() - t0
        self.cpu_paused += time.process_time() - cpu0
        record = {"step": step, "psnr": ev.psnr, "ssim": ev.ssim, "time": self.elapsed(),
                  "cpu": self.cpu()}
        if ev.sampled:
            record["psnr_ci"] = list(ev.psnr_interval)
        self._record(record)
        if self.world.is_main:
            msg = f"step {step}: {ev.describe()}"
            (self.bar.write if self.bar is not None else print)(msg)
            if self.tb:
                scalars = {"eval/psnr": ev.psnr}
                if ev.ssim is not None:
                    scalars["eval/ssim"] = ev.ssim
                self.world.accelerator.log(scalars, step=step)
                if views:
                    tracker = self.world.accelerator.get_tracker("tensorboard")
                    tracker.log_images({f"view/{k}": v for k, v in views.items()}, step=step,
                                       dataformats="HWC")
        return ev

    def _record(self, record: dict) -> None:
        self.history.append(record)
        if self.log_file is not None:
            self.log_file.write(json.dumps(record) + "\n")
            self.log_file.flush()

    def close(self) -> None:
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.tb and self.world.is_main:
            for tracker in self.world.accelerator.trackers:
                tracker.finish()
            self.tb = False


# -- the fixed views logged at every evaluation --------------------------------------------------
VIEW_SIDE = 256
"""Longest side of a picture: longer axes are shown every s-th sample."""
WAVE_SIZE = (1024, 96)
"""Width and height of each of a waveform plot's rows (truth, reconstruction, error)."""


def view_positions(shape: tuple[int, ...], kind: str) -> dict[str, list[np.ndarray]]:
    """The positions of each fixed view: the image; a video's middle frame; a volume's three
    middle slices; audio's whole clip (at most 8 samples a column of the plot)."""
    if kind == "audio":
        return {"waveform": [np.arange(0, shape[0], max(1, shape[0] // (8 * WAVE_SIZE[0])))]}
    step = -(-max(shape[-2:] if kind != "volume" else shape) // VIEW_SIDE)
    every = [np.arange(0, n, step) for n in shape]
    middle = [np.asarray([n // 2]) for n in shape]
    if kind == "image":
        return {"image": every}
    if kind == "video":
        return {"frame": [middle[0]] + every[1:]}
    return {f"slice_{a}": [middle[i] if i == k else every[i] for i in range(3)]
            for k, a in enumerate("zyx")}


def fixed_views(model: INR, grid: PartitionGrid, signal: Signal, world: World) -> dict[str, np.ndarray]:
    """Each fixed view as an RGB picture (uint8 [h, w, 3]): ground truth, reconstruction and
    error side by side (a waveform: one above the other). Every worker renders the partitions
    it holds; the main worker assembles them (the others get an empty dict)."""
    out = {}
    for name, positions in view_positions(grid.shape, signal.kind).items():
        parts = world.all_gather(render_positions(model, grid, positions))
        if not world.is_main:
            continue
        recon = sum(np.where(h[..., None], v, 0) for v, h in parts)
        truth = signal.normalise(take(signal.data, positions))
        recon, truth = np.clip(recon, -1, 1), np.clip(truth, -1, 1)
        out[name] = (_waveform(truth[:, 0], recon[:, 0]) if signal.kind == "audio" else
                     _side_by_side(truth.squeeze(tuple(a for a, p in enumerate(positions) if len(p) == 1)),
                                   recon.squeeze(tuple(a for a, p in enumerate(positions) if len(p) == 1))))
    return out


def _rgb(values: np.ndarray) -> np.ndarray:
    """[-1, 1] values [h, w, channels] as 8-bit RGB (grey unless 3 or 4 channels)."""
    pixels = to_8bit(values)
    return pixels[..., :3] if pixels.shape[-1] in (3, 4) else np.repeat(pixels[..., :1], 3, axis=-1)


def _error(truth: np.ndarray, recon: np.ndarray) -> np.ndarray:
    """|error| on the [0, 1] scale, mean over channels, x4 (white: a quarter of the range)."""
    err = np.abs(recon - truth).mean(-1, keepdims=True) / 2 * 4
    return _rgb(np.clip(err, 0, 1) * 2 - 1)


def _side_by_side(truth: np.ndarray, recon: np.ndarray) -> np.ndarray:
    gap = np.full((truth.shape[0], 4, 3), 255, np.uint8)
    return np.concatenate([_rgb(truth), gap, _rgb(recon), gap, _error(truth, recon)], axis=1)


def _waveform(truth: np.ndarray, recon: np.ndarray) -> np.ndarray:
    """Rows for the truth, the reconstruction and the error (x4): each column spans the
    lowest to the highest value of its samples."""
    width, height = WAVE_SIZE
    rows = []
    for values, colour in ((truth, (255, 170, 60)), (recon, (120, 200, 255)),
                           (np.clip((recon - truth) * 4, -1, 1), (255, 80, 80))):
        image = np.full((height, width, 3), 24, np.uint8)
        cols = np.minimum((np.arange(len(values)) * width) // max(len(values), 1), width - 1)
        low = np.full(width, np.inf)
        high = np.full(width, -np.inf)
        np.minimum.at(low, cols, values)
        np.maximum.at(high, cols, values)
        y = lambda v: np.clip(((1 - v) / 2 * (height - 1)).round(), 0, height - 1)  # noqa: E731
        top, bottom = y(high), y(low)
        rr = np.arange(height)[:, None]
        image[(rr >= top) & (rr <= bottom)] = colour
        rows.append(image)
    return np.concatenate(rows, axis=0)

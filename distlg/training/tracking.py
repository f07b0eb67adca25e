"""What a run tells its user: the opening lines, the progress bar, the loss and scores in
``history.jsonl``, and TensorBoard through accelerate's tracker. The main worker does the
telling; every worker keeps the history (the loss is all-reduced, so it is the same)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable

import torch

from ..config import Config
from ..errors import DistlgError
from ..metrics import Evaluation
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

def _open_history(path: Path, start: int):
    """The run's JSON-lines log, keeping only records up to ``start`` when resuming."""
    kept = []
    if start and path.is_file():
        kept = [line for line in path.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] <= start]
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
            from tqdm.auto import tqdm
            self.bar = tqdm(total=plan.steps, initial=start, unit="step", dynamic_ncols=True)
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
                self.world.accelerator.log({"train/loss": loss}, step=step)

    def eval(self, step: int, evaluate: Callable[[], Evaluation]) -> Evaluation:
        """Run ``evaluate`` off the training clock and report its result."""
        t0, cpu0 = time.perf_counter(), time.process_time()
        ev = evaluate()
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

"""Chaos: interrupt a 2-worker training and a render at random moments, resume each time, and
check that the end is exactly where an uninterrupted run ends.

    python benchmarks/chaos.py                      # 10 + 10 interruptions; ~15 min here (loaded)
    python benchmarks/chaos.py --seed 3 --interruptions 4 --steps 400   # a quicker pass

Training: a 48x96x96 video (the first frames of ../shared/data/bikes.mp4) ingested into a
store (chunks of 12x32x32) that a subprocess serves over HTTP (Python's ``http.server``),
trained by 2 workers (``accelerate launch``, gloo on the CPU, one thread each) streaming from
the URL (a memory budget below each worker's region), a checkpoint every 25 steps into a small
tmpfs mounted on the run's checkpoint folder. At a random moment after each launch
one interruption, the kinds in a seeded random order:

- ``kill -9`` of one worker (rank drawn at random);
- ``SIGTERM`` of the whole process group (what ``timeout``, SLURM's scancel or a shutdown send);
- the HTTP server stopped for 3-6 s, then started again on the same port;
- the checkpoint folder's disk filled (a file takes the tmpfs's free space) until the job
  stops, then emptied; skipped, with the reason, where no tmpfs can be mounted (not root).

After each: the job's exit status and what its workers printed (each at most one line, no
traceback of theirs; the launcher's own report is set aside), no worker process left alive,
every checkpoint named by a manifest whole (every file as its sha256 says); then the same
command with ``--resume``, until the steps are done. The final model must equal, tensor for
tensor (``torch.equal``), that of an uninterrupted run of the same command.

Render: the trained model rendered to .zarr at 4x its resolution per frame, killed (``kill -9``) at a
random moment 10 times and run again each time; the name must never appear before a render
finishes, and the final store must equal an uninterrupted render byte for byte (every file).

Results: ``benchmarks/results/chaos.md`` (each interruption, its kind and moment, what the user
saw, the checks, and the final comparisons). ``run_chaos`` is what ``tests/faults/test_chaos.py``
runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT.parent / "shared" / "data" / "bikes.mp4"
KINDS = ("kill -9 a worker", "SIGTERM the group", "stop the HTTP server", "fill the disk")
CONFIG = """
partition: {factors: [2, 4, 4], overlaps: [0, 1, 1]}
model: {params: 20000}
train: {sample_fraction: 0.01, memory_budget_gib: 0.0004, seed: 5, log_every: 5,
        device: cpu, threads: 1}
run: {tensorboard: false, progress: false, checkpoint_every: 25}
"""
"""The run: streaming (the budget, 420 KB, is below a worker's region, ~700 KB), 2 x 16
partitions."""


# -- pieces --------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python -m http.server`` over a folder, stopped and started again on the same port."""

    def __init__(self, root: Path):
        self.root, self.port, self.proc = root, free_port(), None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "http.server", str(self.port), "--bind",
                                      "127.0.0.1", "--directory", str(self.root)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 20
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("the HTTP server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def launch(args: list[str]) -> subprocess.Popen:
    """``distlg ARGS`` under ``accelerate launch`` with 2 workers, in its own process group."""
    argv = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
            "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", "0", "-m", "distlg", *args]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, cwd=ROOT)


def workers(job: subprocess.Popen) -> list[psutil.Process]:
    try:
        kids = psutil.Process(job.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [p for p in kids if _is_worker(p)]


def _is_worker(p: psutil.Process) -> bool:
    try:
        return "distlg" in " ".join(p.cmdline()) and "accelerate" not in " ".join(p.cmdline())
    except psutil.Error:
        return False


def alive(marker: str) -> list[int]:
    """Processes whose command line names ``marker`` (the run directory) and still run."""
    found = []
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            if marker in " ".join(p.info["cmdline"] or []) and p.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(p.info["pid"])
        except psutil.Error:
            pass
    return found


LAUNCHER_FRAME = "accelerate/commands/launch.py"
"""A frame of the launcher's own traceback (a worker's would run through distlg's modules)."""


def worker_lines(output: str) -> list[str]:
    """What the workers printed when they stopped: their error or interrupt lines, and the
    first line of any traceback of theirs. The launcher's own report (its traceback, from the
    first one through its frames, and the failure summary after it) is left out."""
    lines = output.splitlines()
    cut = next((i for i, line in enumerate(lines) if line.startswith("Traceback")
                and any(LAUNCHER_FRAME in x for x in lines[i:i + 8])), len(lines))
    return [line for line in lines[:cut] if line.startswith(
        ("distlg train: error", "distlg train: interrupted", "Traceback"))]


def launcher_cause(output: str) -> list[str]:
    """The launcher's summary of why the job failed: its root-cause failure's ``traceback :``
    line (the worker's own line, or the signal that ended it), or a hang the harness noted."""
    lines = output.splitlines()
    root = next((i for i, line in enumerate(lines) if line.startswith("Root Cause")), None)
    found = [line.split(":", 1)[1].strip() for line in lines[root:] if "traceback :" in line] \
        if root is not None else []
    return found[:1] + [line for line in lines if line.startswith("chaos: HUNG")]


def whole_checkpoints(run: Path) -> tuple[int, list[str]]:
    """(checkpoints with a manifest, those whose files do not match it)."""
    from distlg.errors import DistlgError
    from distlg.modeldir.format import ModelDir
    from distlg.modeldir.runs import complete_checkpoints

    found, bad = complete_checkpoints(run), []
    for path in found:
        try:
            ModelDir.open(path).verify()
        except (DistlgError, OSError) as exc:
            bad.append(f"{path.name}: {exc}")
    return len(found), bad


def last_step(run: Path) -> int:
    history = run / "history.jsonl"
    steps = [0]
    if history.is_file():
        for line in history.read_text(errors="replace").splitlines():
            try:
                steps.append(int(json.loads(line)["step"]))
            except (ValueError, KeyError, TypeError):
                pass
    return max(steps)


def mount_tmpfs(path: Path, mib: int) -> str | None:
    """Mount a tmpfs of ``mib`` MiB on ``path``; None when done, else why it could not be."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return "not root: no tmpfs can be mounted"
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mib}m", "tmpfs", str(path)],
                          capture_output=True, text=True)
    return None if done.returncode == 0 else f"mount failed: {done.stderr.strip()}"


def fill(path: Path) -> Path:
    """A file that takes all the free space of ``path``'s file system."""
    filler = path / ".filler"
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * (1 << 20))
                fh.flush()
        except OSError:
            pass
    return filler


def tensors(model: Path) -> dict:
    from distlg.modeldir.format import ModelDir

    loaded, _ = ModelDir.open(model).load()
    return dict(loaded.named_tensors())


def digest_tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# -- the runs ------------------------------------------------------------------------------------
@dataclass
class Interruption:
    kind: str
    moment: float
    """Seconds after the launch."""
    step: int
    """The last step the run had logged at that moment."""
    status: int | None = None
    saw: list[str] = field(default_factory=list)
    """What the workers printed (each at most one line)."""
    launcher: list[str] = field(default_factory=list)
    """The cause the launcher's summary names."""
    orphans: int = 0
    checkpoints: int = 0
    corrupt: list[str] = field(default_factory=list)
    note: str = ""


@dataclass
class Chaos:
    train: list[Interruption] = field(default_factory=list)
    render: list[Interruption] = field(default_factory=list)
    equal_tensors: tuple[int, int] = (0, 0)
    render_equal: bool = False
    skipped: str = ""
    seconds: float = 0.0
    steps: int = 0


def _prepare(root: Path) -> Path:
    """The clip's store under ``root/served``."""
    import imageio.v3 as iio
    from PIL import Image

    from distlg.cli import main

    store = root / "served" / "clip.zarr"
    if store.exists():
        return store
    frames = []
    for frame in iio.imiter(CLIP, plugin="pyav"):
        h, w = frame.shape[:2]
        square = frame[:, (w - h) // 2:(w + h) // 2]
        frames.append(np.asarray(Image.fromarray(square).resize((96, 96), Image.BILINEAR)))
        if len(frames) == 48:
            break
    np.save(root / "clip.npy", np.stack(frames))
    assert main(["ingest", str(root / "clip.npy"), str(store), "--kind", "video", "--fps", "25",
                 "--chunks", "12", "32", "32", "--no-progress"]) == 0
    return store


STALL_S = 180
"""A job that neither ends nor logs a new step for this long is taken as hung (and killed)."""
SURVIVE_S = 60
"""After the server came back, a job still training this much later has come through."""


def _wait(job: subprocess.Popen, run: Path | None = None, survive: float | None = None
          ) -> tuple[int, str] | None:
    """Wait for ``job`` to end while it makes progress (new steps in ``run``'s history); with
    ``survive``, None once it has gone on making progress for that long."""
    t0, seen, since = time.time(), -1, time.time()
    while True:
        try:
            out, _ = job.communicate(timeout=5)
            return job.returncode, out
        except subprocess.TimeoutExpired:
            step = last_step(run) if run is not None else -1
            if step != seen:
                seen, since = step, time.time()
            elif time.time() - since > STALL_S:
                break
            if survive is not None and time.time() - t0 > survive and step > 0:
                return None
    stuck = [(p.pid, p.status()) for p in workers(job)]
    os.killpg(job.pid, signal.SIGKILL)
    out, _ = job.communicate()
    return job.returncode, out + f"\nchaos: HUNG (no step for {STALL_S} s; workers {stuck}): killed"


def _moment(job: subprocess.Popen, run: Path, rng: random.Random) -> float:
    """Wait for a random moment of the job's life: a fifth of them in its start-up (0.5-5 s
    after the launch), the others 0-6 s after it logged a new step."""
    t0, start = time.time(), last_step(run)
    if rng.random() < 0.2:
        until = lambda: time.time() - t0 >= wait  # noqa: E731
        wait = rng.uniform(0.5, 5.0)
    else:
        extra, began = rng.uniform(0.0, 6.0), None

        def until() -> bool:
            nonlocal began
            if began is None and last_step(run) > start:
                began = time.time()
            return began is not None and time.time() - began >= extra
    while not until() and job.poll() is None:
        time.sleep(0.05)
    return round(time.time() - t0, 1)


def _interrupt(kind: str, job: subprocess.Popen, server: Server, disk: Path, rng: random.Random,
               log) -> str:
    """Apply ``kind`` to the running ``job``; returns a note."""
    if kind == "kill -9 a worker":
        deadline = time.time() + 60
        while len(found := workers(job)) < 2 and job.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        if not found:
            return "no worker to kill: the job had ended"
        victim = rng.choice(found)
        rank = victim.environ().get("RANK", "?")
        victim.kill()
        return f"killed rank {rank}"
    if kind == "SIGTERM the group":
        os.killpg(job.pid, signal.SIGTERM)
        return ""
    if kind == "stop the HTTP server":
        pause = rng.uniform(3, 6)
        server.stop()
        time.sleep(pause)
        server.start()
        return f"server down {pause:.1f} s"
    filler = fill(disk)
    try:
        job.wait(timeout=180)
    except subprocess.TimeoutExpired:
        pass
    filler.unlink()
    return "disk full until the job stopped"


def run_training(root: Path, server: Server, n: int, steps: int, rng: random.Random, log) -> Chaos:
    chaos = Chaos(steps=steps)
    config = root / "chaos.yaml"
    config.write_text(CONFIG + f'signal: {{path: "{server.url}/clip.zarr"}}\n')
    common = ["train", str(config), "--steps", str(steps)]
    reference = root / "reference"
    log(f"reference: {steps} steps, uninterrupted")
    status, out = _wait(launch(common + ["--out", str(reference)]), reference)
    assert status == 0, out[-3000:]

    run = root / "run"
    why = mount_tmpfs(run / "checkpoints", 16)
    chaos.skipped = why or ""
    kinds = [k for k in KINDS if why is None or k != "fill the disk"]
    order = (kinds * n)[:n]
    rng.shuffle(order)
    job = None
    try:
        for kind in order:
            relaunched = job is None
            if relaunched:
                job = launch(common + ["--out", str(run), "--resume"])
            event = Interruption(kind, _moment(job, run, rng), last_step(run))
            if job.poll() is None:
                event.note = _interrupt(kind, job, server, run / "checkpoints", rng, log)
            else:
                event.note = "the job had ended before the moment came"
            if not relaunched:
                event.note = "(the job that went on) " + event.note
            ended = _wait(job, run, survive=SURVIVE_S if kind == "stop the HTTP server" else None)
            if ended is None:  # it had read what it needed before the server stopped
                event.note += "; the job went on training"
                out = ""
            else:
                (event.status, out), job = ended, None
            event.saw, event.launcher = worker_lines(out), launcher_cause(out)
            event.orphans = len(alive(str(run)))
            event.checkpoints, event.corrupt = whole_checkpoints(run)
            chaos.train.append(event)
            log(f"{len(chaos.train)}. {kind} at {event.moment} s (step {event.step}): exit "
                f"{event.status}; {event.note}; {' | '.join(event.saw) or '(nothing)'}")
        if job is not None:  # the last one went on: let it finish
            _wait(job, run)
        for _ in range(3):  # resume, uninterrupted now, until the steps are done
            if is_complete(run / "model") and last_step(run) >= steps:
                break
            status, out = _wait(launch(common + ["--out", str(run), "--resume"]), run)
            log(f"final resume: exit {status}; {' | '.join(worker_lines(out)) or 'finished'}")
        final = whole_checkpoints(run)
        assert not final[1], final
    finally:
        subprocess.run(["umount", "-l", str(run / "checkpoints")], capture_output=True)
    a, b = tensors(run / "model"), tensors(reference / "model")
    chaos.equal_tensors = (sum(torch_equal(a[k], b[k]) for k in b if k in a), len(b))
    return chaos


def is_complete(path: Path) -> bool:
    from distlg.modeldir.runs import is_complete as complete

    return complete(path)


def torch_equal(x, y) -> bool:
    import torch

    return bool(torch.equal(x, y))


def _new_staging(out: Path, left: set[Path]) -> bool:
    """Whether a render of ``out`` has made its hidden staging folder (one not in ``left``)."""
    return bool(set(out.parent.glob(f".{out.name}.*.partial")) - left)


def run_render(root: Path, n: int, rng: random.Random, log, chaos: Chaos) -> None:
    model = root / "reference" / "model"
    args = ["render", str(model), "--scale", "1,4,4", "--no-progress"]
    reference = root / "render-ref.zarr"
    subprocess.run([sys.executable, "-m", "distlg", *args, "--out", str(reference)], cwd=ROOT,
                   check=True, capture_output=True)
    out = root / "render" / "r.zarr"
    out.parent.mkdir(exist_ok=True)
    for _ in range(n):
        left = set(out.parent.glob(".r.zarr.*.partial"))  # by renders killed before
        job = subprocess.Popen([sys.executable, "-m", "distlg", *args, "--out", str(out)], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        t0, writing = time.time(), rng.random() >= 0.2  # a fifth killed while starting up
        extra = rng.uniform(0.0, 3.0) if writing else rng.uniform(0.3, 2.0)
        began = None if writing else t0
        while job.poll() is None and (began is None or time.time() - began < extra):
            if began is None and _new_staging(out, left):
                began = time.time()
            time.sleep(0.02)
        event = Interruption("kill -9 the render", round(time.time() - t0, 1), 0)
        staged = _new_staging(out, left)
        if job.poll() is None:
            job.kill()
            event.note = "killed " + ("while writing (its hidden folder there)" if staged
                                      else "while starting up")
        else:
            event.note = "finished before the moment came"
        event.status, text = _wait(job)
        event.saw = [line for line in text.splitlines() if line.strip()]
        if event.status != 0 and out.exists():
            event.corrupt.append(f"{out.name} exists after a killed render")
        if event.status == 0:  # it finished: start over, so that the next one is interrupted
            subprocess.run(["rm", "-rf", str(out)])
        chaos.render.append(event)
        log(f"render {len(chaos.render)}: killed at {event.moment} s: exit {event.status}; "
            f"{event.note}; name present: {out.exists()}")
    subprocess.run([sys.executable, "-m", "distlg", *args, "--out", str(out)], cwd=ROOT, check=True,
                   capture_output=True)
    leftovers = [p.name for p in out.parent.iterdir() if p.name != out.name]
    chaos.render_equal = digest_tree(out) == digest_tree(reference) and not leftovers


def run_chaos(root: Path, interruptions: int = 10, steps: int = 1200, seed: int = 0,
              log=print) -> Chaos:
    """The whole exercise under ``root`` (a fresh folder); returns what happened."""
    t0 = time.time()
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    store = _prepare(root)
    server = Server(store.parent)
    server.start()
    try:
        chaos = run_training(root, server, interruptions, steps, rng, log)
    finally:
        server.stop()
    run_render(root, interruptions, rng, log, chaos)
    chaos.seconds = time.time() - t0
    return chaos


# -- the report ----------------------------------------------------------------------------------
def report(chaos: Chaos, seed: int, load: tuple[float, float, float]) -> list[str]:
    lines = ["## Training: 2 workers, streaming over HTTP", "",
             f"{chaos.steps} steps, a checkpoint every 25, seed {seed}; the moment is seconds after "
             "the launch and the step the last the run had logged then.", "",
             "| # | interruption | moment | step | exit | what the workers printed | the launcher's "
             "summary names | orphans | whole checkpoints | note |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for i, e in enumerate(chaos.train, 1):
        saw = "<br>".join(f"`{s}`" for s in e.saw) or "(nothing)"
        cause = "<br>".join(f"`{s}`" for s in e.launcher) or "-"
        whole = f"{e.checkpoints}" + (f", corrupt: {'; '.join(e.corrupt)}" if e.corrupt else ", all whole")
        lines.append(f"| {i} | {e.kind} | {e.moment} s | {e.step} | {e.status} | {saw} | {cause} | "
                     f"{e.orphans} | {whole} | {e.note} |")
    same, total = chaos.equal_tensors
    lines += ["", f"Final model after the interruptions and resumes: {same} of {total} tensors "
              "equal (`torch.equal`) to the uninterrupted run's."]
    if chaos.skipped:
        lines.append(f"Disk-full interruptions skipped: {chaos.skipped}.")
    lines += ["", "## Render to .zarr, killed (kill -9)", "",
              "| # | moment | exit | name present after | note |", "|---|---|---|---|---|"]
    for i, e in enumerate(chaos.render, 1):
        present = "yes: " + "; ".join(e.corrupt) if e.corrupt else "no"
        lines.append(f"| {i} | {e.moment} s | {e.status} | {present} | {e.note} |")
    lines += ["", "Final render after the kills, against an uninterrupted one: "
              + ("byte for byte equal (every file of the store), nothing else left beside it"
                 if chaos.render_equal else "DIFFERENT"),
              "", f"Whole exercise: {chaos.seconds / 60:.1f} min; load average at the start "
              f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (2 cores, shared)."]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interruptions", type=int, default=10)
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--root", type=Path, default=ROOT / "storage" / "bench" / "chaos")
    args = parser.parse_args()
    load = os.getloadavg()
    subprocess.run(["rm", "-rf", str(args.root / "run"), str(args.root / "reference"),
                    str(args.root / "render"), str(args.root / "render-ref.zarr")])
    chaos = run_chaos(args.root, args.interruptions, args.steps, args.seed)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import write_results

    write_results("chaos", "Chaos: interrupted 2-worker training and render, resumed to the "
                  "uninterrupted result", report(chaos, args.seed, load))


if __name__ == "__main__":
    main()

"""The downstream tasks of the INCODE and Local-Global papers, at CPU scale: image fitting,
super-resolution, denoising and CT reconstruction, for each architecture and a classical
baseline.

    python benchmarks/incode.py            # every architecture distlg has; results/incode.md
    python benchmarks/incode.py --quick    # a smoke run (30 steps, 64x64), a few minutes
    python benchmarks/incode.py --tasks ct --name incode_ct   # one task; results/incode_ct.md

Architectures: Local-Global INCODE, INCODE per partition and INCODE (where distlg has them),
Local-Global SIREN, SIREN per partition and SIREN. The tasks (one thread, seed 0, equal
weights within a task; PSNR on [0, 1] values, SSIM on the same):

- **fit**: astronaut 128x128 RGB, 4 values per weight, (4, 4) partitions of 32x32, full batch,
  lr 5e-4, 300 steps: the paper's image setting at a quarter of its pixels and fewer steps
  (an INCODE step costs ~0.4 s here, most of it the harmonizer).
- **sr**: camera 128x128 ingested with ``--downsample 4`` (32x32 area averages), (2, 2)
  partitions, 0.25 values per weight (4 K weights for 1 K samples: the footprint loss asks
  for the 16 K-pixel image), w0 10, lr 1e-3, 300 steps; trained with the footprint-averaged
  loss (``distlg.training.measured``), rendered at ``--scale 4`` and scored against the original.
  Baseline: bicubic upsampling of the 32x32 input.
- **denoise**: astronaut 128x128 with Gaussian noise, sigma 0.1 (``--noise gaussian:0.1``),
  (4, 4) partitions, the noisy-store defaults (300 steps, 4 values per weight, lr 5e-4),
  scored against the clean image. Baseline: the noisy
  input itself.
- **ct**: the Shepp-Logan phantom 128x128, 64 angles over [0, 180) (``--ct-angles 64``),
  (4, 4) partitions, 4 values per weight, lr 2e-3, 600 steps, scored against the phantom
  (INCODE's harmonizer reads the sinogram, never the image). Baseline: filtered
  back-projection (``skimage.transform.iradon``, ramp filter), clipped to [0, 1].

Seconds are training wall time on one thread, without evaluation.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import plot_images, run_config, write_results  # noqa: E402

from distlg.training.measured import SUPPORTED_ARCHS  # noqa: E402

SCRATCH = Path(__file__).resolve().parents[1] / "storage" / "bench" / "incode"
LABELS = {"local-global-incode": "Local-Global INCODE", "per-partition-incode": "INCODE per partition",
          "incode": "INCODE", "local-global": "Local-Global SIREN",
          "per-partition": "SIREN per partition", "siren": "SIREN"}


def architectures() -> list[str]:
    """The architectures distlg has, INCODE's first."""
    from distlg.nn import architecture

    have = set(architecture.ARCHS) | set(getattr(architecture, "INCODE_ARCHS", ()))
    return [a for a in LABELS if a in have]


def _store(name: str, source: str, **options) -> Path:
    from distlg.data.ingest import IngestOptions, ingest

    return ingest(source, SCRATCH / f"{name}.zarr", IngestOptions(progress=False, **options)).path


def _score(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    from distlg.metrics import psnr, ssim

    pred = np.clip(pred, -1, 1)
    return psnr(float(np.mean((pred - truth) ** 2)), 2.0), ssim(truth, pred, "image")


def _truth(path: Path) -> np.ndarray:
    from distlg.data.store import open_signal

    signal = open_signal(path)
    return signal.normalise(signal.data[:])


class Tasks:
    """Each task: its stores, its baseline and how a trained model is scored."""

    def __init__(self, quick: bool, harmonizer_bias: float = 0.0):
        self.size = 64 if quick else 128
        self.harmonizer_bias = harmonizer_bias
        self.steps = {"fit": 300, "sr": 300, "ct": 600} if not quick else {"fit": 30, "sr": 30, "ct": 30}
        self.quick = quick
        n = self.size
        self.fit = _store(f"fit{n}", f"builtin:astronaut@{n}x{n}")
        self.hr = _store(f"camera{n}", f"builtin:camera@{n}x{n}")
        self.lr = _store(f"camera{n}-lr4", f"builtin:camera@{n}x{n}", downsample=4)
        self.clean = _store(f"astronaut{n}", f"builtin:astronaut@{n}x{n}")
        self.noisy = _store(f"astronaut{n}-noisy", f"builtin:astronaut@{n}x{n}", noise="gaussian:0.1")
        self.ct = _store(f"phantom{n}-ct", f"builtin:phantom@{n}", ct_angles=n // 2)
        self.images: dict[str, dict[str, np.ndarray]] = {}

    def settings(self, task: str, arch: str) -> dict:
        common = dict(arch=arch, threads=1, seed=0, eval_every=0, out=str(SCRATCH / f"{task}-{arch}"),
                      harmonizer_bias=self.harmonizer_bias)
        if task == "fit":
            return dict(path=str(self.fit), factors=[4, 4], compression=4.0, lr=5e-4,
                        steps=self.steps["fit"], **common)
        if task == "sr":
            return dict(path=str(self.lr), factors=[2, 2], compression=0.25, w0=10.0, lr=1e-3,
                        steps=self.steps["sr"], **common)
        if task == "denoise":
            return dict(path=str(self.noisy), factors=[4, 4], **common,
                        **({"steps": 30} if self.quick else {}))
        return dict(path=str(self.ct), factors=[4, 4], lr=2e-3, steps=self.steps["ct"], **common)

    def baseline(self, task: str) -> tuple[str, float, float | None, float]:
        """(name, PSNR, SSIM, seconds) of the task's classical baseline."""
        t0 = time.perf_counter()
        if task == "fit":
            return "-", float("nan"), None, 0.0
        if task == "sr":
            import torch
            import torch.nn.functional as F

            low = torch.from_numpy(_truth(self.lr)).permute(2, 0, 1)[None]
            up = F.interpolate(low, scale_factor=4, mode="bicubic", align_corners=False)
            pred, truth, name = up[0].permute(1, 2, 0).numpy(), _truth(self.hr), "bicubic"
        elif task == "denoise":
            pred, truth, name = _truth(self.noisy), _truth(self.clean), "noisy input"
        else:
            pred, truth, name = self._fbp(), _truth(self.ct), "filtered back-projection"
        self.images.setdefault(task, {})[name] = pred
        return (name, *_score(pred, truth), time.perf_counter() - t0)

    def _fbp(self) -> np.ndarray:
        import zarr
        from skimage.transform import iradon

        from distlg.data.store import open_signal

        signal = open_signal(self.ct)
        desc = signal.info.measurement
        sino = zarr.open_array(store=str(self.ct / desc.array), mode="r")[:]
        image = iradon(sino, theta=np.asarray(desc.angles), circle=False,
                       output_size=self.size, filter_name="ramp")
        return signal.normalise(np.clip(image, *signal.value_range))[..., None]

    def score(self, task: str, arch: str, result) -> tuple[float, float | None]:
        """PSNR and SSIM of a trained model on the task's truth."""
        from distlg.rendering.render import render

        if task == "sr":
            pred, truth = render(result.model_dir, scale=4.0), _truth(self.hr)
        elif task == "denoise":
            pred, truth = render(result.model_dir), _truth(self.clean)
        else:  # fit and ct: the store holds the truth
            pred, truth = render(result.model_dir), _truth(Path(self.settings(task, arch)["path"]))
        self.images.setdefault(task, {})[LABELS[arch]] = pred
        return _score(pred, truth)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: few steps, 64x64")
    parser.add_argument("--archs", nargs="+", help="architectures (default: all distlg has)")
    parser.add_argument("--tasks", nargs="+", default=["fit", "sr", "denoise", "ct"],
                        choices=["fit", "sr", "denoise", "ct"], help="tasks (default: all four)")
    parser.add_argument("--name", help="results file name (default: incode, incode_quick)")
    parser.add_argument("--harmonizer-bias", type=float, default=0.0,
                        help="INCODE archs: the harmonizer's last bias (the paper's: 0.312)")
    args = parser.parse_args()
    t_start = time.perf_counter()
    tasks = Tasks(args.quick, args.harmonizer_bias)
    archs = args.archs or architectures()
    rows = ["| task | method | PSNR (dB) | SSIM | seconds | weights |", "|---|---|---|---|---|---|"]
    scores: dict[str, dict[str, float]] = {}
    fits: list[str] = []
    for task in args.tasks:
        name, p, s, secs = tasks.baseline(task)
        if name != "-":
            rows.append(f"| {task} | {name} | {p:.2f} | {s:.4f} | {secs:.1f} | - |")
        for arch in archs:
            if task == "ct" and arch not in SUPPORTED_ARCHS["radon"]:
                continue
            result = run_config(**tasks.settings(task, arch))
            p, s = tasks.score(task, arch, result)
            scores.setdefault(task, {})[arch] = p
            if task == "sr":
                fits.append(sr_fit(arch, result, p, _truth(tasks.lr)))
            weights = result.plan.arch.total_params(result.plan.grid.num_partitions)
            rows.append(f"| {task} | {LABELS[arch]} | {p:.2f} | {s:.4f} | {result.seconds:.1f} | "
                        f"{weights:,} |")
            print(rows[-1], flush=True)
    figures = [f"![{task}]({plot_images(images, f'incode_{task}')})"
               for task, images in tasks.images.items()]
    notes = ordering(scores) + "\n\n" + SR_FIT + "\n".join(fits) + "\n\n" + "\n".join(figures)
    notes += f"\n\nTotal run time: {(time.perf_counter() - t_start) / 60:.1f} minutes."
    write_results(args.name or ("incode_quick" if args.quick else "incode"),
                  "Downstream tasks: image fitting, super-resolution, denoising, CT", rows,
                  __doc__.split("\n\n", 2)[2] + "\n" + notes)


SR_FIT = """Super-resolution is underdetermined (1 K measured block means, 16 K pixels to render):
how well each model explains its input, against how well it renders the original. "input
fit": the model's footprint means against the stored 32x32 block means (what training fits
and prints); "point values": the model at the 32x32 block centres against those means;
"full size": the table's PSNR. A model whose input fit is far above its
point values has put content into the blocks' insides that averages away: the averaging
operator's null space, which the loss does not see.

"""


def sr_fit(arch: str, result, full: float, stored: np.ndarray) -> str:
    from distlg.rendering.render import render

    points, _ = _score(render(result.model_dir), stored)
    return (f"- {LABELS[arch]}: input fit {result.final.psnr:.2f} dB, point values "
            f"{points:.2f} dB, full size {full:.2f} dB")


def ordering(scores: dict[str, dict[str, float]]) -> str:
    """Where Local-Global stands against per-partition, task by task (the paper's ordering)."""
    lines = ["Local-Global against per-partition (the paper's ordering: Local-Global above):", ""]
    for family, (lg, pp) in (("INCODE", ("local-global-incode", "per-partition-incode")),
                             ("SIREN", ("local-global", "per-partition"))):
        for task, by_arch in scores.items():
            if lg in by_arch and pp in by_arch:
                gap = by_arch[lg] - by_arch[pp]
                lines.append(f"- {family}, {task}: {gap:+.2f} dB "
                             f"({'holds' if gap > 0 else 'does not hold'})")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

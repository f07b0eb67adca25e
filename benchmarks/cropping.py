"""Cropping: weights before and after, and the kept region's render beside the ground truth.

    python benchmarks/cropping.py          # ~2 minutes on 2 cores; writes results/cropping.md

Trains Local-Global SIREN on scikit-image's astronaut (256x256, (8, 8) partitions, ~49 K
parameters, 1000 full-batch steps), then crops the model four ways with ``distlg.modeldir.crop`` (no
retraining) and renders each kept region with ``distlg.rendering``: the weights that remain (the
global branch stays, the local part falls in proportion to the partitions dropped), the PSNR of
the kept region before and after the crop, and whether the two renders are bit-identical.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import plot_images, run_config, write_results  # noqa: E402

from distlg.data.store import open_signal  # noqa: E402
from distlg.metrics import psnr  # noqa: E402
from distlg.modeldir.crop import crop, select  # noqa: E402
from distlg.modeldir.format import ModelDir  # noqa: E402
from distlg.rendering.region import box_text, parse_box  # noqa: E402
from distlg.rendering.render import render  # noqa: E402

SIGNAL = "builtin:astronaut@256x256"
SCRATCH = Path(__file__).resolve().parents[1] / "storage" / "bench" / "cropping"
CROPS = {  # name: (keep box, drop box)
    "top-left quarter": ("0:128,0:128", None),
    "a 96x96 window (the rocket)": ("16:112,144:240", None),
    "right half": ("0:256,128:256", None),
    "centre removed": (None, "64:192,64:192"),
}


def main() -> None:
    shutil.rmtree(SCRATCH, ignore_errors=True)  # the crops of an earlier run
    result = run_config(path=SIGNAL, factors=[8, 8], params=49_152, steps=1000,
                        out=str(SCRATCH / "run"))
    model = ModelDir.open(result.model_dir)
    signal = open_signal(SIGNAL)
    truth = signal.normalise(signal.read(tuple((0, d) for d in signal.shape)))
    full = render(model)
    lines = [f"Model: {result.plan.arch.arch}, {model.params()['total']:,} weights "
             f"({result.plan.arch.local_width} local / {result.plan.arch.global_width} global wide),"
             f" PSNR {result.final.psnr:.2f} dB over the whole image after 1000 steps.", "",
             "| crop | partitions kept | weights after | of before | local weights kept | "
             "PSNR of a kept region, before / after | renders identical |",
             "|---|---|---|---|---|---|---|"]
    images = {"ground truth": truth, f"model ({result.final.psnr:.2f} dB)": full}
    axes = signal.axes
    for i, (name, (keep, drop)) in enumerate(CROPS.items()):
        kept = select(model, keep=[parse_box(keep, signal.shape, axes)] if keep else [],
                      drop=[parse_box(drop, signal.shape, axes)] if drop else [])
        report = crop(model, kept, SCRATCH / f"crop-{i}")
        region = parse_box(keep, signal.shape, axes) if keep else ((0, 64), (0, 256))
        sl = tuple(slice(a, b) for a, b in region)
        before, after = full[sl], render(report.path, region)
        score, score_before = (psnr(float(np.mean((x - truth[sl]) ** 2)), signal.psnr_peak)
                               for x in (after, before))
        lines.append(f"| {name} (`{'--keep ' + keep if keep else '--drop ' + drop}`) | "
                     f"{len(report.kept)} of {len(report.kept) + len(report.dropped)} | "
                     f"{report.after['total']:,} | {report.after['total'] / report.before['total']:.1%} | "
                     f"{report.after['local'] / report.before['local']:.1%} | "
                     f"{score_before:.2f} / {score:.2f} dB on {box_text(region)} | "
                     f"{'yes' if np.array_equal(before, after) else 'NO'} |")
        shown = render(report.path, fill=-1.0)  # dropped partitions drawn black
        images[f"{name}\n{report.after['total']:,} weights"] = shown
    lines += ["", f"![Crops]({plot_images(images, 'cropping')})", "",
              "Read: the global branch (and merge) is kept whole; the local weights fall exactly "
              "with the share of partitions kept; the kept region renders bit-identically "
              "(`distlg render` of the cropped directory against the same region of the "
              "uncropped model), with no retraining. Dropped partitions are shown black "
              "(`--fill -1`)."]
    for line in lines:
        print(line)
    write_results("cropping", "Cropping a trained model by deleting partition files", lines)


if __name__ == "__main__":
    main()

"""Quality per byte: PSNR against bytes on disk, distlg's models (float32, fp16, int8) against
the codecs people would use instead.

    python benchmarks/rate_distortion.py                         # astronaut, bikes, phantom
    python benchmarks/rate_distortion.py --signals astronaut --steps-scale 0.2   # a quick look

Per signal, distlg's Local-Global recipe (the default) and SIREN-per-partition train at three
budgets (``--compression``: values per weight), SIREN at the smallest one for as long as
Local-Global trained there (equal time; it is the slow baseline). Each trained model is
exported as it is (float32), and with ``distlg export --quantize fp16`` and ``int8``
(``--scale per-tensor`` and ``per-partition``); each is rendered whole and scored against the
signal (PSNR on [0, 1] over every value, the render's float values clipped to the range, as
the trainer scores), and its size is the bytes of every file of its model directory (the
JSON documents among them counted apart too: they are a fixed cost, large beside small models).

Reference rows, each file's bytes against the PSNR of what it decodes to:
- astronaut (256x256 RGB): JPEG and WebP through Pillow at qualities 10-95;
- bikes (the first 60 frames, the centre square resized to 256x256, as benchmarks/fidelity.py
  takes it): H.264 through PyAV (libx264, yuv420p, preset medium) at CRF 18-48, the size of
  the .mp4 file;
- phantom (benchmarks/fidelity.py's 128^3 grey-value head phantom): a slice-wise codec, every
  z slice a greyscale JPEG (qualities 10-95), the sum of the files; the z slices as the frames
  of an H.264 video (grey as RGB, yuv420p, so only the luma plane varies; CRF 18-48), the
  mean of the decoded channels scored; and the raw volume through zstd (level 19, lossless:
  its size only).

One thread; timings are not compared. Each signal's rows are kept in
results/rate_distortion_rows.json, and results/rate_distortion.md and rate_distortion.png are
written from every signal there, so signals can run side by side (one per core):

    python benchmarks/rate_distortion.py --signals bikes &
    python benchmarks/rate_distortion.py --signals astronaut phantom; wait
    python benchmarks/rate_distortion.py --table-only
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, _pyplot, run_config, write_results  # noqa: E402
from fidelity import signal_settings  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCRATCH = ROOT / "storage" / "bench" / "rate_distortion"
VARIANTS = {"float32": (None, None), "fp16": ("fp16", None), "int8 per-tensor": ("int8", "per-tensor"),
            "int8 per-partition": ("int8", "per-partition")}
METHODS = {"Local-Global (distlg)": ("local-global", list(VARIANTS)),
           "SIREN-per-partition": ("per-partition", ["float32", "int8 per-tensor"]),
           "SIREN": ("siren", ["float32", "int8 per-tensor"])}
SIGNALS = {
    # values per weight (three budgets, the middle one SIREN's), steps, other settings
    "astronaut": dict(budgets=(16.0, 8.0, 4.0), steps=500, settings=dict(factors=[8, 8])),
    "bikes": dict(budgets=(256.0, 128.0, 64.0), steps=300, settings=dict()),
    "phantom": dict(budgets=(256.0, 128.0, 64.0), steps=500, settings=dict()),
}


def psnr(truth: np.ndarray, recon: np.ndarray) -> float:
    """PSNR of values on [-1, 1], scored on [0, 1] (the trainer's)."""
    mse = float(np.mean(np.square(np.clip(recon, -1, 1) - truth, dtype=np.float64)))
    return 10 * math.log10(4.0 / mse) if mse > 0 else math.inf


def to_unit(u8: np.ndarray) -> np.ndarray:
    """uint8 values as distlg normalises them: [-1, 1]."""
    return u8.astype(np.float32) * np.float32(2 / 255) - 1


# -- distlg ------------------------------------------------------------------------------------
def distlg_rows(name: str, signal, truth: np.ndarray, spec: dict, steps_scale: float) -> list[dict]:
    """Train each method at each budget, export each variant, score it; SIREN at the middle
    budget for Local-Global's training time there."""
    from distlg.modeldir.export import export
    from distlg.modeldir.format import ModelDir
    from distlg.rendering.render import render

    steps = max(1, round(spec["steps"] * steps_scale))
    rows, seconds = [], {}
    for method, (arch, variants) in METHODS.items():
        budgets = spec["budgets"] if arch != "siren" else spec["budgets"][:1]
        for budget in budgets:
            settings = dict(spec["settings"], arch=arch, compression=budget, steps=steps)
            if arch == "siren":
                settings.pop("factors", None)
                settings["steps"] = _steps_within(name, signal, settings, seconds[budget])
            run = SCRATCH / name / f"{arch}-{budget:g}"
            t0 = time.perf_counter()
            result = run_config(signal=signal, seed=0, threads=1, out=str(run), eval="sample",
                                eval_every=0, **settings)
            if arch == "local-global":
                seconds[budget] = result.seconds
            weights = result.plan.arch.total_params(result.plan.grid.num_partitions)
            for variant in variants:
                quantize, scale = VARIANTS[variant]
                path = result.model_dir
                if quantize is not None:
                    path = SCRATCH / name / "exports" / f"{arch}-{budget:g}-{variant.replace(' ', '-')}"
                    shutil.rmtree(path, ignore_errors=True)
                    export(result.model_dir, path, quantize=quantize, scale=scale)
                size = ModelDir.open(path).storage()[1]
                json_bytes = sum(p.stat().st_size for p in Path(path).rglob("zarr.json"))
                rows.append(dict(signal=name, method=method, variant=variant, budget=budget,
                                 weights=weights, steps=result.steps_run, bytes=size, json=json_bytes,
                                 psnr=psnr(truth, render(path))))
                print(f"{name} {method} {variant} at {budget:g} values/weight ({weights:,} "
                      f"weights, {result.steps_run} steps): {rows[-1]['psnr']:.2f} dB in "
                      f"{size:,} bytes", flush=True)
            print(f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    return rows


def _steps_within(name: str, signal, settings: dict, seconds: float) -> int:
    """The steps of ``settings`` that fit in ``seconds`` of training (a 5-step calibration)."""
    probe = run_config(signal=signal, seed=0, threads=1, out=str(SCRATCH / name / "calibration"),
                       eval="sample", **{**settings, "steps": 5, "eval_every": 0})
    return max(1, min(settings["steps"], int(seconds / (probe.seconds / probe.steps_run))))


# -- reference codecs -------------------------------------------------------------------------
def pillow_rows(name: str, image: np.ndarray, fmt: str, qualities) -> list[dict]:
    """An RGB or greyscale image (or each slice of a volume, [n, H, W]) through Pillow."""
    from PIL import Image

    slices = image if image.ndim == 3 and image.shape[-1] not in (1, 3) else image[None]
    rows = []
    for quality in qualities:
        size, decoded = 0, []
        for s in slices:
            buffer = io.BytesIO()
            Image.fromarray(np.squeeze(s)).save(buffer, format=fmt, quality=quality)
            size += buffer.tell()
            decoded.append(np.asarray(Image.open(io.BytesIO(buffer.getvalue()))).reshape(s.shape))
        got = np.stack(decoded).reshape(image.shape)
        label = f"{fmt} (slice-wise)" if slices is image else fmt
        rows.append(dict(signal=name, method=label, variant=f"quality {quality}", budget=quality,
                         bytes=size, psnr=psnr(to_unit(image), to_unit(got))))
    return rows


def h264_rows(name: str, clip: np.ndarray, crfs, fps: int = 25,
              label: str = "H.264 (libx264)") -> list[dict]:
    """A clip [T, H, W, 3] through libx264 (yuv420p, preset medium) at each CRF, as .mp4; a
    grey clip [T, H, W] goes in as RGB and is scored on the mean of the decoded channels."""
    grey = clip.ndim == 3
    if grey:
        clip = np.repeat(clip[..., None], 3, axis=-1)
    import av

    rows = []
    for crf in crfs:
        buffer = io.BytesIO()
        with av.open(buffer, mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height = clip.shape[2], clip.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(crf), "preset": "medium"}
            for frame in clip:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
        size = buffer.tell()
        buffer.seek(0)
        with av.open(buffer) as container:
            got = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
        truth = to_unit(clip)
        got = to_unit(got)
        if grey:
            truth, got = truth[..., 0], got.mean(axis=-1)
        rows.append(dict(signal=name, method=label, variant=f"CRF {crf}", budget=crf,
                         bytes=size, psnr=psnr(truth, got)))
    return rows


def reference_rows(name: str, raw: np.ndarray) -> list[dict]:
    qualities = (10, 20, 30, 50, 70, 85, 95)
    if name == "astronaut":
        return pillow_rows(name, raw, "JPEG", qualities) + pillow_rows(name, raw, "WebP", qualities)
    if name == "bikes":
        return h264_rows(name, raw, (18, 23, 28, 33, 38, 43, 48))
    import numcodecs

    volume = raw[..., 0]
    lossless = len(numcodecs.Zstd(19).encode(np.ascontiguousarray(volume).tobytes()))
    return pillow_rows(name, volume, "JPEG", qualities) + h264_rows(
        name, volume, (18, 23, 28, 33, 38, 43, 48), label="H.264 over z slices") + [
        dict(signal=name, method="zstd (raw, lossless)", variant="level 19", budget=19,
             bytes=lossless, psnr=math.inf)]


# -- report ------------------------------------------------------------------------------------
def table(rows: list[dict]) -> list[str]:
    lines = ["| signal | method | variant | budget | weights | steps | bytes on disk (JSON) | PSNR (dB) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ours = "weights" in r
        variant, budget, weights = ((r["variant"], f"{r['budget']:g} values/weight", f"{r['weights']:,}")
                                    if ours else ("–", r["variant"], "–"))
        size = f"{r['bytes']:,}" + (f" ({r['json']:,})" if ours else "")
        lines.append(f"| {r['signal']} | {r['method']} | {variant} | {budget} | {weights} | "
                     f"{r.get('steps', '–')} | {size} | {r['psnr']:.2f} |")
    return lines


def goal_lines(rows: list[dict]) -> list[str]:
    """int8 (and fp16) against float32 of the same Local-Global model: the goal row."""
    lines = [
        "PSNR against float32's, and bytes on disk as a fraction of float32's (in brackets: "
        "without the JSON documents)", "",
        "| signal | budget | float32 | fp16 | int8 per-tensor | int8 per-partition |",
        "|---|---|---|---|---|---|"]
    lg = [r for r in rows if r["method"] == "Local-Global (distlg)"]
    for key in sorted({(r["signal"], r["budget"]) for r in lg}, key=lambda k: (k[0], -k[1])):
        got = {r["variant"]: r for r in lg if (r["signal"], r["budget"]) == key}
        base = got["float32"]
        cells = [f"{base['psnr']:.2f} dB, {base['bytes']:,} B"]
        for variant in ("fp16", "int8 per-tensor", "int8 per-partition"):
            r = got[variant]
            cells.append(f"{r['psnr'] - base['psnr']:+.2f} dB at {r['bytes'] / base['bytes']:.3f}x "
                         f"({(r['bytes'] - r['json']) / (base['bytes'] - base['json']):.3f}x)")
        lines.append(f"| {key[0]} | {key[1]:g} values/weight | " + " | ".join(cells) + " |")
    return lines


REFERENCE_STYLES = ("x-", "+--", "d-.")
"""Line styles of a panel's reference codecs (black), in the order they appear."""


def plot(rows: list[dict], signals: list[str]) -> str:
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(signals), figsize=(5.5 * len(signals), 4.6), squeeze=False)
    styles = {"float32": "o-", "fp16": "s--", "int8 per-tensor": "^-", "int8 per-partition": "v:"}
    colors = {"Local-Global (distlg)": "tab:blue", "SIREN-per-partition": "tab:orange",
              "SIREN": "tab:green"}
    for ax, name in zip(axes[0], signals):
        mine = [r for r in rows if r["signal"] == name]
        references = 0
        for method, variant in dict.fromkeys((r["method"], r["variant"] if "weights" in r else "")
                                             for r in mine):
            pts = sorted((r["bytes"], r["psnr"]) for r in mine if r["method"] == method
                         and (r["variant"] if "weights" in r else "") == variant)
            if math.isinf(pts[0][1]):
                ax.axvline(pts[0][0], color="grey", lw=1, ls="--", label=method)
            elif variant:
                ax.plot(*zip(*pts), styles[variant], color=colors[method], ms=4,
                        label=f"{method} {variant}", alpha=1 if variant != "fp16" else 0.7)
            else:
                ax.plot(*zip(*pts), REFERENCE_STYLES[references % 3], color="black", ms=4, label=method)
                references += 1
        ax.set(xscale="log", xlabel="bytes on disk", ylabel="PSNR (dB)", title=name)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6.5)
    fig.tight_layout()
    RESULTS.mkdir(parents=True, exist_ok=True)
    fig.savefig(RESULTS / "rate_distortion.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "rate_distortion.png"


def save_rows(name: str, rows: list[dict], minutes: float) -> None:
    """Record one signal's rows in results/rate_distortion_rows.json (under a lock: runs of
    different signals may share the machine), so that the table is rebuilt from every signal."""
    from common import provenance
    from filelock import FileLock

    path = RESULTS / "rate_distortion_rows.json"
    RESULTS.mkdir(parents=True, exist_ok=True)
    SCRATCH.mkdir(parents=True, exist_ok=True)
    with FileLock(str(SCRATCH.parent / "rate_distortion_rows.lock")):
        saved = json.loads(path.read_text()) if path.exists() else {}
        saved[name] = dict(rows=rows, minutes=round(minutes, 1), provenance=provenance().strip(),
                           load=os.getloadavg()[0])
        path.write_text(json.dumps(saved, indent=1) + "\n")


def write_table() -> None:
    """results/rate_distortion.md and its plot from every signal the rows file holds."""
    saved = json.loads((RESULTS / "rate_distortion_rows.json").read_text())
    names = [n for n in SIGNALS if n in saved]
    rows = [row for n in names for row in saved[n]["rows"]]
    lines = ["## PSNR against bytes on disk", "", f"![rate-distortion]({plot(rows, names)})", "",
             "## int8 and fp16 against float32 (the same Local-Global model; goal: int8 within "
             "0.3 dB at a quarter of the bytes)", "", *goal_lines(rows), "", "## Every row", "",
             *table(rows)]
    runs = [f"- {n}: {saved[n]['minutes']} minutes, load {saved[n]['load']:.1f} at its end; "
            + saved[n]["provenance"].replace("\n", " ") for n in names]
    write_results("rate_distortion", "Quality per byte: distlg's models against image, video and "
                  "volume codecs", lines,
                  "Each signal's run (one thread; signals may run side by side, one per core):\n\n"
                  + "\n".join(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--signals", nargs="+", default=list(SIGNALS), choices=list(SIGNALS))
    parser.add_argument("--steps-scale", type=float, default=1.0,
                        help="multiply every signal's steps by this (quicker, lower PSNR)")
    parser.add_argument("--table-only", action="store_true",
                        help="train nothing: rebuild the results file from the rows file")
    args = parser.parse_args()
    if args.table_only:
        return write_table()
    import torch

    from distlg.data.store import open_signal

    torch.set_num_threads(1)
    for name in args.signals:
        t0 = time.perf_counter()
        _, [base] = signal_settings(name)
        signal = open_signal(base["path"])
        raw = signal.read(tuple((0, d) for d in signal.shape))
        rows = reference_rows(name, raw)
        rows += distlg_rows(name, signal, signal.normalise(raw), SIGNALS[name], args.steps_scale)
        save_rows(name, rows, (time.perf_counter() - t0) / 60)
    write_table()


if __name__ == "__main__":
    main()

"""INCODE archs: the activation, the harmonizer, stored coefficients, training and resume."""

import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from modelkit import subset

from distlg.config import Config
from distlg.data.signal import Signal, SignalInfo
from distlg.data.sources.builtin import builtin
from distlg.geometry import PartitionGrid
from distlg.modeldir.crop import crop
from distlg.modeldir.export import export
from distlg.modeldir.format import ModelDir
from distlg.nn import fused, incode
from distlg.nn.model import COEFFICIENTS, INR, Architecture, incode_sine
from distlg.rendering.render import render
from distlg.training.checkpoint import write_model
from distlg.training.distributed import World
from distlg.training.plan import lattice_geometry, make_plan
from distlg.training.trainer import train


def quick(tmp_path, name="run", **settings):
    return Config().replace(out=str(tmp_path / name), tensorboard=False, progress=False, **settings)


GRID = PartitionGrid((16, 16), (4, 4))


def incode_model(arch="local-global-incode", grid=GRID, merge="shared", seed=0,
                 lattice=(2, 2)) -> INR:
    """A freshly initialised INCODE model over ``grid`` with non-trivial coefficients."""
    geometry = lattice_geometry(grid, arch, merge)
    if geometry:
        geometry["lattice"] = lattice
    a = Architecture(arch, 2, 3, hidden_layers=2, local_width=8, global_width=12, merge=merge,
                     **geometry)
    model = INR(a, range(grid.num_partitions), seed=seed)
    if a.incode:
        generator = torch.Generator().manual_seed(seed + 1)
        model.constant(COEFFICIENTS).copy_(0.3 * torch.randn(a.constant_shapes()[COEFFICIENTS],
                                                             generator=generator))
    return model


@pytest.mark.parametrize("arch,recipe,sets", [
    ("local-global-incode", "distlg", ("local", "global")),
    ("local-global-incode", "paper", ("local", "global", "merge")),
    ("per-partition-incode", "distlg", ("local",)),
    ("incode", "distlg", ("global",)),
    ("local-global", "distlg", ()),
])
def test_coefficient_sets_per_arch_and_recipe(arch, recipe, sets):
    plan = make_plan(Config().replace(arch=arch, recipe=recipe), builtin("camera@64x64"))
    a = plan.arch
    assert a.coefficient_sets == sets
    assert a.constant_shapes() == ({COEFFICIENTS: (len(sets), 4)} if sets else {})
    assert a.global_params() == sum(math.prod(s) for s in a.global_shapes().values()) + 4 * len(sets)
    if sets:
        preview = incode.read_preview(builtin("camera@64x64"))
        assert incode.build(a, preview, seed=0)().shape == (len(sets), 4)


def test_activation_is_the_formula():
    z = torch.tensor([-0.2, 0.0, 0.013, 0.5])
    a, b, c, d = 0.3, -0.4, 0.7, -0.1
    got = incode_sine(z, torch.tensor([a, b, c, d]), 30.0)
    want = [math.exp(a) * math.sin(math.exp(b) * 30.0 * v + c) + d for v in z.tolist()]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-6)

    # a one-layer per-partition INCODE model, written out in float64
    arch = Architecture("per-partition-incode", 2, 1, hidden_layers=0, local_width=5)
    model = INR(arch, [0], seed=3)
    coeff = torch.tensor([[0.2, 0.1, -0.3, 0.05]])
    model.constant(COEFFICIENTS).copy_(coeff)
    x = torch.rand(1, 7, 2) * 2 - 1
    w, bias = model["local.0.weight"][0].double(), model["local.0.bias"][0].double()
    wo, bo = model["local.out.weight"][0].double(), model["local.out.bias"][0].double()
    ca, cb, cc, cd = coeff[0].double()
    h = torch.exp(ca) * torch.sin(torch.exp(cb) * 30.0 * (x[0].double() @ w + bias) + cc) + cd
    with torch.no_grad():
        np.testing.assert_allclose(model(x)[0].double().numpy(), (h @ wo + bo).numpy(), atol=1e-5)


@pytest.mark.parametrize("arch,merge", [("local-global", "shared"), ("local-global", "bias"),
                                        ("per-partition", "shared"), ("siren", "shared")])
def test_zero_coefficients_are_siren_bit_for_bit(arch, merge):
    siren = incode_model(arch, merge=merge)
    model = incode_model("incode" if arch == "siren" else f"{arch}-incode", merge=merge)
    model.load_global({**siren.global_state(), COEFFICIENTS: torch.zeros_like(model.constant(COEFFICIENTS))})
    for p in siren.partition_ids:
        model.load_local(p, siren.local_state(p))
    x = torch.rand(16, 9, 2) * 2 - 1
    with torch.no_grad():
        assert torch.equal(model(x), siren(x))


@pytest.mark.parametrize("preview,sample_rate", [
    (torch.randn(1, 3, 40, 48), None),          # image, 3 channels
    (torch.randn(1, 1, 8, 24, 24), None),       # volume or video, 1 channel
    (torch.randn(2, 8000) * 0.3, 16000.0),      # stereo audio
])
def test_harmonizer_extractors_shapes_and_gradients(preview, sample_rate):
    ndim = preview.dim() - 1 if preview.dim() == 2 else preview.dim() - 2
    arch = Architecture("incode", ndim, preview.shape[-3] if ndim > 1 else 2, global_width=8)
    preview = preview.requires_grad_()
    harmonizer = incode.build(arch, preview.detach(), seed=0, sample_rate=sample_rate)
    features = harmonizer.extractor(preview)
    assert features.shape == ((incode.MFCC_COEFFICIENTS,) if ndim == 1 else (incode.FEATURES,))
    out = harmonizer(preview)
    assert out.shape == (1, 4)
    out.pow(2).sum().backward()
    grads = [p.grad for p in harmonizer.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert preview.grad.abs().sum() > 0
    assert harmonizer.mlp[-1].bias.grad.abs().sum() > 0


def test_harmonizer_is_seeded_and_bn_uses_its_one_input():
    arch = Architecture("incode", 2, 3, global_width=8)
    preview = torch.randn(1, 3, 32, 32)
    a, b = incode.build(arch, preview, seed=5), incode.build(arch, preview, seed=5)
    assert torch.equal(a(), b()) and torch.equal(a(), a())  # no running statistics move
    assert not torch.equal(a(), incode.build(arch, preview, seed=6)())
    assert not [n for n, _ in a.named_buffers() if "running" in n]


def test_harmonizer_bias_sets_where_the_coefficients_start(tmp_path):
    """Default 0: the coefficients start near 0, i.e. near SIREN's activation;
    --harmonizer-bias 0.312 starts where the paper's image code does."""
    arch = Architecture("incode", 2, 3, global_width=8)
    preview = torch.randn(1, 3, 32, 32)
    siren, paper = (incode.build(arch, preview, seed=5, bias=b) for b in (0.0, incode.PAPER_MLP_BIAS))
    assert not siren.mlp[-1].bias.any()
    with torch.no_grad():  # the same weights otherwise: the coefficients move by the bias
        torch.testing.assert_close(paper() - siren(), torch.full((1, 4), 0.312), rtol=0, atol=1e-6)
    result = train(quick(tmp_path, path="builtin:camera@32x32", arch="incode", params=800,
                         steps=1, threads=1, harmonizer_bias=0.312))
    moved = result.model.harmonizer.mlp[-1].bias.detach() - 0.312  # by one Adam step
    assert 0 < moved.abs().max() < 0.01


def test_preview_is_bounded_and_strided():
    image = Signal.from_array(np.arange(600 * 500 * 3, dtype=np.float32).reshape(600, 500, 3) % 255,
                              "image", (0.0, 255.0))
    p = incode.read_preview(image)
    assert p.shape == (1, 3, 200, 250)
    np.testing.assert_array_equal(p[0, :, 1, 1].numpy(), image.normalise(image.data[3, 2]))
    video = Signal.from_array(np.zeros((40, 300, 260, 3), np.uint8), "video", (0.0, 255.0))
    assert incode.read_preview(video).shape == (1, 3, 14, 100, 87)
    audio = Signal.from_array(np.linspace(-1, 1, 300_001, dtype=np.float32)[:, None], "audio",
                              (-1.0, 1.0))
    clip = incode.read_preview(audio)
    assert clip.shape == (1, incode.PREVIEW_SAMPLES)
    start = (300_001 - incode.PREVIEW_SAMPLES) // 2
    assert clip[0, 0] == pytest.approx(float(audio.data[start, 0]))


def test_pretrained_extractor_weights_load_and_mismatches_are_refused(tmp_path):
    from safetensors.torch import save_file

    arch = Architecture("incode", 2, 3, global_width=8)
    preview = torch.randn(1, 3, 32, 32)
    source = incode.build(arch, preview, seed=1)
    state = {k: v.contiguous() for k, v in source.extractor.state_dict().items()}
    state["fc.weight"] = torch.zeros(2, 2)  # a whole network's other tensors are ignored
    save_file(state, tmp_path / "resnet.safetensors")
    loaded = incode.build(arch, preview, seed=2, weights=tmp_path / "resnet.safetensors")
    for (name, p), (_, q) in zip(source.extractor.named_parameters(), loaded.extractor.named_parameters()):
        assert torch.equal(p, q), name
    state["conv1.weight"] = torch.zeros(64, 1, 7, 7)
    save_file(state, tmp_path / "grey.safetensors")
    with pytest.raises(incode.HarmonizerError, match=r"conv1.weight.*\(64, 1, 7, 7\).*\(64, 3, 7, 7\)"):
        incode.build(arch, preview, seed=2, weights=tmp_path / "grey.safetensors")
    del state["conv1.weight"]
    save_file(state, tmp_path / "partial.safetensors")
    with pytest.raises(incode.HarmonizerError, match="no tensor 'conv1.weight'"):
        incode.build(arch, preview, seed=2, weights=tmp_path / "partial.safetensors")


@pytest.mark.parametrize("merge", ["shared", "bias"])
def test_a_subset_renders_bit_identically(merge):
    model = incode_model(merge=merge)
    pids = [3, 5, 6, 12]
    part = subset(model, pids)
    x = torch.rand(len(pids), 20, 2) * 2 - 1
    assert torch.equal(fused.predict(model, x, pids), fused.predict(part, x))


def write_incode_model(path: Path, merge="shared") -> Path:
    grid = PartitionGrid((16, 16), (4, 4))
    info = SignalInfo("image", (16, 16), 3, np.dtype("uint8"), (0.0, 255.0))
    return write_model(path, incode_model(grid=grid, merge=merge), World(), grid, info)


def test_render_and_crop_never_build_the_harmonizer(tmp_path, monkeypatch):
    path = write_incode_model(tmp_path / "model")
    full = render(path)

    def refuse(*args, **kwargs):
        raise AssertionError("the harmonizer was built")

    monkeypatch.setattr(incode.Harmonizer, "__init__", refuse)
    monkeypatch.setattr(incode, "build", refuse)
    assert np.array_equal(render(path), full)
    crop(path, [0, 1, 4, 5], tmp_path / "cropped")
    box = ((0, 8), (0, 8))
    assert np.array_equal(render(tmp_path / "cropped", box), full[:8, :8])
    # nor import it: a fresh interpreter renders and crops without loading distlg.nn.incode
    script = (f"import sys; from distlg.rendering.render import render; "
              f"from distlg.modeldir.crop import crop; render({str(path)!r}); "
              f"crop({str(path)!r}, [0], {str(tmp_path / 'c2')!r}); "
              f"assert 'distlg.nn.incode' not in sys.modules, 'imported'")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_training_stores_the_harmonizers_coefficients_and_all_reduces_its_gradients(tmp_path):
    result = train(quick(tmp_path, path="builtin:camera@32x32", arch="local-global-incode",
                         factors=[2, 2], params=800, steps=4, samples_per_partition=64, threads=1))
    model = result.model
    harmonizer_params = sum(p.numel() for p in model.harmonizer.parameters())
    shared = sum(math.prod(s) for s in result.plan.arch.global_shapes().values())
    assert harmonizer_params > 200_000
    sets = len(result.plan.arch.coefficient_sets)
    # not the harmonizer's weights; float64: summed exactly (distlg.training.exact)
    assert result.allreduce_bytes == 8 * (shared + 4 * sets + 2)
    md = ModelDir.open(result.model_dir)
    stored = md.read_global()[COEFFICIENTS]
    with torch.no_grad():
        assert torch.equal(stored, model.harmonizer())
    assert not (result.model_dir / "optim").exists()  # the harmonizer is a checkpoint's only
    assert (tmp_path / "run" / "checkpoints" / "step-00000004" / "optim" / "harmonizer").is_dir()
    assert md.params()["global"] == result.plan.arch.global_params()
    exported = export(tmp_path / "run", tmp_path / "exported")  # the last checkpoint, weights only
    assert exported.read_global().keys() == md.read_global().keys()
    assert torch.equal(exported.read_global()[COEFFICIENTS], stored)


def test_resume_equals_an_uninterrupted_run(tmp_path):
    settings = dict(path="builtin:camera@32x32", arch="per-partition-incode", factors=[2, 2],
                    params=800, samples_per_partition=64, seed=3, threads=1)
    whole = train(quick(tmp_path, "whole", steps=6, **settings))
    train(quick(tmp_path, "parts", steps=3, **settings))
    resumed = train(quick(tmp_path, "parts", steps=6, resume=True, **settings))
    assert resumed.steps_run == 3
    a, b = ModelDir.open(whole.model_dir).load(), ModelDir.open(resumed.model_dir).load()
    for (name, x), (_, y) in zip(a.named_tensors(), b.named_tensors()):
        assert torch.equal(x, y), name
    assert torch.equal(a.constant(COEFFICIENTS), b.constant(COEFFICIENTS))


def test_extend_keeps_the_stored_coefficients(tmp_path):
    from distlg.config import ExtendConfig
    from distlg.training.extend import extend

    t = np.linspace(0, 1, 8)[:, None, None, None]
    y = np.linspace(0, 1, 16)[None, :, None, None]
    clip = (127 + 120 * np.sin(6 * t + 4 * y + np.arange(3))).astype(np.uint8) * np.ones((1, 1, 16, 1),
                                                                                         np.uint8)
    first = train(quick(tmp_path, arch="local-global-incode", factors=[2, 2, 2], steps=5,
                        local_width=8, global_width=8, samples_per_partition=32, threads=1),
                  signal=Signal.from_array(clip[:4], "video"))
    result = extend(first.model_dir, Signal.from_array(clip, "video"), tmp_path / "extended",
                    ExtendConfig(steps=5, samples_per_partition=32, progress=False))
    assert math.isfinite(result.psnr)
    old = first.model_dir / "global" / "c" / "0"
    assert (result.path / "global" / "c" / "0").read_bytes() == old.read_bytes()
    box = ((0, 4), (0, 16), (0, 16))
    assert np.array_equal(render(result.path, box), render(first.model_dir, box))


def test_incode_fits_a_real_image(tmp_path):
    """Local-Global INCODE (distlg's recipe) on the camera photograph: 29.5 dB at 200 steps
    here, where Local-Global SIREN reaches 24.6 dB (and INCODE started from the paper's
    harmonizer bias, 0.312, 25.8 dB)."""
    result = train(quick(tmp_path, path="builtin:camera@32x32", arch="local-global-incode",
                         factors=[2, 2], params=800, steps=200, threads=1))
    assert result.final.psnr > 28.0
    assert result.final.ssim > 0.85


def test_coefficient_gradients_summed_over_workers_give_one_process_harmonizer_gradients():
    """What the bucket sums is the coefficients' gradient (``StepCoefficients``): each worker's,
    from its partitions' loss, adds up to one process's, and carried through the harmonizer
    it gives one process's harmonizer gradients."""
    from distlg.training.steps import autograd_forward_backward

    signal = builtin("camera@32x32")
    plan = make_plan(Config().replace(path="builtin:camera@32x32", arch="local-global-incode",
                                      factors=[2, 2], params=800), signal)
    preview = incode.read_preview(signal)
    coords = torch.rand(4, 50, 2) * 2 - 1
    values = torch.rand(4, 50, 1) * 2 - 1

    def step(pids, summed=None):
        model = INR(plan.arch, pids, seed=0)
        model.attach_harmonizer(incode.build(plan.arch, preview, seed=0))
        coefficients = incode.StepCoefficients(model.harmonizer)
        autograd_forward_backward(model, coords[pids], values[pids], 1 / 200,
                                  coefficients=coefficients)
        leaf = coefficients.leaf.grad.clone()
        if summed is not None:
            coefficients.leaf.grad.copy_(summed)
        coefficients.backward()
        assert not coefficients.leaf.grad.any()  # cleared for the next step
        return leaf, {n: p.grad for n, p in model.harmonizer.named_parameters()}

    (one, harmonizer), (first, _), (second, _) = step([0, 1, 2, 3]), step([0, 1]), step([2, 3])
    torch.testing.assert_close(first + second, one, rtol=1e-5, atol=1e-7)
    _, from_sum = step([0, 1], summed=first + second)
    for name, g in harmonizer.items():
        err = (from_sum[name] - g).abs().max() / g.abs().max()
        assert err < 1e-5, f"{name}: {err:.1e}"


INCODE_RUNS = [("--arch", "local-global-incode"), ("--arch", "local-global-incode", "--recipe", "paper"),
               ("--arch", "per-partition-incode"), ("--arch", "incode")]


@pytest.mark.multiprocess
@pytest.mark.parametrize("args", INCODE_RUNS, ids=lambda args: "-".join(args[1::2]))
def test_two_workers_take_the_steps_one_process_takes(tmp_path, args):
    """Over 100 steps from the start, for every INCODE architecture: the models (and their
    coefficients) of 2 workers and 1 process agree to 1e-5, and so does every step's loss. The
    harmonizer amplifies any rounding-level difference in its gradient (a 1e-7 change drifts
    to percent within 100 steps), so this holds only because no sum across partitions is
    rounded in float32 (``distlg.training.exact``)."""
    from test_distributed import assert_same_model, command, losses

    config = tmp_path / "run.yaml"
    config.write_text('signal: {path: "builtin:camera@32x32"}\npartition: {factors: [2, 2]}\n'
                      "model: {params: 800}\ntrain: {samples_per_partition: 64, lr: 0.001, "
                      "seed: 7, log_every: 1}\nrun: {tensorboard: false, progress: false}\n")
    for workers, name in ((1, "one"), (2, "two")):
        proc = subprocess.run(command(workers, str(config), *args, "--steps", "100", "--out",
                                      str(tmp_path / name), "--threads", "1"),
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    one, two = tmp_path / "one", tmp_path / "two"
    assert_same_model(one / "model", two / "model")
    a, b = (ModelDir.open(r / "model").read_global()[COEFFICIENTS] for r in (one, two))
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    la, lb = losses(one), losses(two)
    assert sorted(la) == sorted(lb) == list(range(1, 101))
    for step in la:
        assert la[step] == pytest.approx(lb[step], rel=1e-5)


@pytest.mark.multiprocess
@pytest.mark.parametrize("args", [("--arch", "local-global-incode", "--recipe", "paper"),
                                  ("--arch", "incode")])
def test_a_step_of_two_workers_is_a_step_of_one_process_mid_training(tmp_path, args):
    """From a 2-worker checkpoint at step 14 (the harmonizer trained, Adam's moments
    accumulated), the next step taken by 1 process and by 2 workers gives the same model,
    coefficients and loss to 1e-5."""
    from test_distributed import assert_same_model, losses, run

    run(tmp_path, 2, "base", *args, "--steps", "14", "--checkpoint-every", "14")
    for name in ("one", "two"):
        shutil.copytree(tmp_path / "base", tmp_path / name)
    one = run(tmp_path, 1, "one", *args, "--steps", "15", "--resume")
    two = run(tmp_path, 2, "two", *args, "--steps", "15", "--resume")
    assert_same_model(one / "model", two / "model")
    a, b = (ModelDir.open(r / "model").read_global()[COEFFICIENTS] for r in (one, two))
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert losses(one)[15] == pytest.approx(losses(two)[15], rel=1e-5)


@pytest.mark.parametrize("args,needle", [
    (["--arch", "local-global", "--harmonizer-weights", "w.safetensors"], "for the INCODE archs"),
    (["--arch", "siren", "--harmonizer-bias", "0.312"], "--harmonizer-bias is for the INCODE archs"),
    (["--arch", "incode", "--harmonizer-weights", "missing.safetensors"], "is not a file"),
])
def test_harmonizer_option_errors_are_one_line(tmp_path, args, needle):
    proc = subprocess.run([sys.executable, "-m", "distlg", "train", "--signal", "builtin:camera@32x32",
                           "--steps", "1", "--out", str(tmp_path / "run"), "--no-tensorboard", *args],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_audio_incode_trains_through_its_mfcc_harmonizer(tmp_path):
    t = np.arange(8000) / 8000
    tone = (0.5 * np.sin(2 * np.pi * 440 * t) * np.exp(-3 * t)).astype(np.float32)
    signal = Signal.from_array(tone, "audio", (-1.0, 1.0), sample_rate=8000)
    result = train(quick(tmp_path, arch="per-partition-incode", factors=[4], steps=30, lr=1e-3,
                         local_width=16, log_every=1, threads=1), signal=signal)
    losses = [r["loss"] for r in result.history if "loss" in r]
    assert len(losses) == 30 and losses[-1] < 0.5 * losses[0]
    assert isinstance(result.model.harmonizer.extractor, incode.MFCC)
    assert result.model.harmonizer.extractor.n_fft == 512  # ~46 ms at 8 kHz

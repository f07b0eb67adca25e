"""The single-process trainer on small real signals, and its command line."""

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import torch

from distlg.config import Config, ConfigError, ExtendConfig
from distlg.data.sources.builtin import builtin
from distlg.flags import load
from distlg.modeldir.format import ModelDir
from distlg.training.plan import make_plan
from distlg.training.trainer import train


def quick(tmp_path, **settings):
    return Config().replace(out=str(tmp_path / "run"), tensorboard=False, progress=False,
                            **settings)


def test_local_global_fits_a_real_image(tmp_path):
    config = quick(tmp_path, path="builtin:camera@64x64", factors=[4, 4], params=3000, steps=300)
    result = train(config)
    assert result.final.psnr > 24.5  # camera 64x64 at 1.4 values per weight: 25.8 dB here
    assert result.final.ssim > 0.8
    model = ModelDir.open(tmp_path / "run" / "model")
    assert len(model.partition_ids) == 16
    assert model.params()["total"] == result.plan.arch.total_params(16)


def test_global_lr_scales_only_the_replicated_part(tmp_path):
    """global_lr 0 freezes a Local-Global model's global branch and merge while its local
    sub-networks train; a SIREN (all of it replicated) trains at the full rate regardless."""
    from distlg.nn.model import INR

    settings = dict(path="builtin:camera@32x32", factors=[2, 2], params=800, steps=20)
    result = train(quick(tmp_path, global_lr=0.0, **settings))
    init = INR(result.plan.arch, range(4), seed=0)
    trained = result.model
    for name in result.plan.arch.global_shapes():
        assert torch.equal(trained[name], init[name]), name
    assert not torch.equal(trained["local.0.weight"], init["local.0.weight"])

    siren = dict(settings, arch="siren", factors=[1, 1])
    a = train(quick(tmp_path / "a", global_lr=0.0, **siren)).model
    b = train(quick(tmp_path / "b", **siren)).model
    assert all(torch.equal(a[n], b[n]) for n in a.arch.global_shapes())


def test_plan_defaults_follow_the_signal_kind():
    image = builtin("astronaut@256x256")
    plan = make_plan(Config(), image)
    assert plan.grid.factors == (8, 8)  # 32x32-pixel partitions
    assert plan.samples_per_partition is None  # full batch
    assert plan.lr == 5e-4 and plan.steps == 2000 and plan.global_lr == 0.3
    total = plan.arch.total_params(64)
    assert abs(total / (256 * 256 * 3 / 4) - 1) < 0.05


def test_default_video_halo_only_on_split_axes():
    from distlg.data.signal import Signal

    short = Signal.from_array(np.zeros((32, 64, 64, 3), np.uint8), "video")  # one partition in time
    plan = make_plan(Config(), short)
    assert plan.grid.factors[0] == 1 and plan.grid.overlaps == (0, 2, 2)
    long = Signal.from_array(np.zeros((100, 64, 64, 3), np.uint8), "video")
    assert make_plan(Config(), long).grid.overlaps == (1, 2, 2)


def test_the_trainer_takes_the_grid_its_store_records(tmp_path):
    """No --factors or --partition-size: the grid ingest chunked the store for (not the kind's
    rule, which gives 2 x 2 here); either option, or one SIREN, still decides."""
    from distlg.data.ingest import IngestOptions, ingest
    from distlg.data.store import open_signal

    path = tmp_path / "s.zarr"
    ingest("builtin:camera@64x64", path, IngestOptions(factors=[4, 2], progress=False))
    signal = open_signal(path)
    assert signal.info.ingest_factors == (4, 2)
    assert make_plan(Config().replace(params=2000), signal).grid.factors == (4, 2)
    assert make_plan(Config().replace(factors=[1, 2], params=2000), signal).grid.factors == (1, 2)
    sized = Config().replace(partition_size=[32], params=2000)
    assert make_plan(sized, signal).grid.factors == (2, 2)
    assert make_plan(Config().replace(arch="siren"), signal).grid.factors == (1, 1)
    assert make_plan(Config().replace(params=2000), builtin("camera@64x64")).grid.factors == (2, 2)


def test_settings_are_resolved_once_from_the_tables():
    """``Config.resolved`` leaves no kind- or recipe-dependent setting empty, takes its values
    from ``distlg.defaults``' tables, and changes nothing when run again."""
    from distlg import defaults

    video = builtin("astronaut@64x64").info
    for recipe in defaults.RECIPES:
        config = Config().replace(recipe=recipe).resolved(video)
        assert config.model.merge == defaults.BY_RECIPE[recipe].merge
        assert config.model.max_global_width == defaults.BY_RECIPE[recipe].max_global_width
        assert config.train.lr == defaults.BY_KIND["image"].lr
        assert config.train.global_lr == defaults.BY_KIND["image"].global_lr
        assert config.partition.factors == [2, 2] and config.partition.overlaps == [0, 0]
        assert config.model.params == round(64 * 64 * 3 / defaults.BY_KIND["image"].compression)
        assert config.resolved(video) == config
    noisy = dataclasses.replace(video, noise="gaussian:0.1")
    assert Config().resolved(noisy).train.steps == defaults.DENOISING_STEPS


def test_help_writes_the_defaults_tables():
    from distlg import defaults

    out = subprocess.run([sys.executable, "-m", "distlg", "train", "--help"], capture_output=True,
                         text=True).stdout
    out = " ".join(out.split())
    recipes = ", ".join(f"{r} {d.merge}" for r, d in defaults.BY_RECIPE.items())
    assert f"Default by recipe: {recipes}." in out
    kinds = ", ".join(f"{k} {d.steps}" for k, d in defaults.BY_KIND.items())
    assert f"Default by kind: {kinds}." in out
    assert f"(default: {defaults.W0})" in out and f"(default: {defaults.MEMORY_BUDGET_GIB})" in out


def test_settings_are_checked_where_they_are_made():
    with pytest.raises(ConfigError, match=r"seed must be in \[0, 2\^64\), got -1"):
        Config().replace(seed=-1)
    with pytest.raises(ConfigError, match="sample fraction must be in"):
        Config().replace(sample_fraction=1.5)
    with pytest.raises(ConfigError, match="schedule must be constant or cosine"):
        ExtendConfig(schedule="linear")
    with pytest.raises(ConfigError, match="steps must be >= 1"):
        ExtendConfig(steps=0)


def test_an_unknown_section_is_a_config_error_naming_the_sections():
    import distlg

    for call in (lambda: Config().replace(foo__bar=1), lambda: distlg.train(foo__bar=1)):
        with pytest.raises(ConfigError, match="unknown config section 'foo'.*signal, partition, "
                           "model, train, run"):
            call()
    with pytest.raises(ConfigError, match="unknown setting train.bar"):
        Config().replace(train__bar=1)


def test_config_files_and_overrides(tmp_path):
    (tmp_path / "a.yaml").write_text("model: {arch: siren, params: 1000}\ntrain: {steps: 7}\n")
    (tmp_path / "b.toml").write_text("[model]\narch = 'siren'\nparams = 1000\n[train]\nsteps = 7\n")
    a, b = load(tmp_path / "a.yaml"), load(tmp_path / "b.toml")
    assert a == b and a.model.arch == "siren" and a.train.steps == 7
    assert a.replace(steps=9).train.steps == 9
    assert a.replace(model__arch="per-partition").model.arch == "per-partition"
    (tmp_path / "bad.yaml").write_text("model: {arch: nonsense}\n")
    with pytest.raises(ConfigError, match="arch"):
        load(tmp_path / "bad.yaml")
    (tmp_path / "typo.yaml").write_text("train: {stesp: 3}\n")
    with pytest.raises(ConfigError, match="stesp"):
        load(tmp_path / "typo.yaml")


@pytest.mark.parametrize("args,needle", [
    (["--steps", "x"], "invalid int value"),
    (["--arch", "mlp"], "invalid choice"),
    (["--no-such-flag"], "unrecognized arguments"),
    (["missing.yaml"], "does not exist"),
    (["--signal", "builtin:nothing"], "unknown built-in signal"),
    (["--factors", "300", "2"], "partitions for only"),
    (["--factors", "2", "2", "2"], "needs 1 or 2 values"),
    (["--steps", "0"], "steps must be"),
    (["--params", "10", "--factors", "8", "8"], "parameters within"),
    (["--global-lr", "-1"], "global lr must be"),
    (["--seed", "-1"], "seed must be in [0, 2^64)"),
])
def test_cli_errors_are_one_line_with_status_2(tmp_path, args, needle):
    proc = subprocess.run([sys.executable, "-m", "distlg", "train", *args, "--out", str(tmp_path),
                           "--no-progress", "--no-tensorboard"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert needle in err and "Traceback" not in err


def test_every_option_has_help():
    proc = subprocess.run([sys.executable, "-m", "distlg", "train", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    from distlg.cli import build_parser
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices["train"]
    for action in sub._actions:
        assert action.help, f"{action.option_strings} has no help"


def test_normalisation_round_trips():
    sig = builtin("camera@32x32")
    raw = sig.read(((0, 32), (0, 32)))
    assert np.array_equal(sig.denormalise(sig.normalise(raw)), raw)


def test_cosine_schedule_runs_from_lr_to_its_final_fraction():
    from distlg.training.optim import scheduled_lr

    assert scheduled_lr(1e-3, 0, 100, "cosine", 0.1) == pytest.approx(1e-3)
    assert scheduled_lr(1e-3, 50, 100, "cosine", 0.1) == pytest.approx(0.55e-3)
    assert scheduled_lr(1e-3, 100, 100, "cosine", 0.1) == pytest.approx(1e-4)
    assert scheduled_lr(1e-3, 50, 100, "constant", 0.1) == 1e-3


def test_a_thin_budget_says_its_local_networks_are_thin(tmp_path, capsys):
    """35 partitions of a 64x48 image at the default budget leave local width 1: the run says
    so and what to change; the default grid's run does not."""
    from distlg.training.trainer import train

    common = dict(path="builtin:camera@64x48", steps=1, tensorboard=False, progress=False)
    thin = train(Config().replace(factors=[5, 7], out=str(tmp_path / "thin"), **common))
    assert thin.model.arch.local_width < 4
    assert "warning: local sub-networks only 1 wide" in capsys.readouterr().out
    wide = train(Config().replace(out=str(tmp_path / "wide"), **common))
    assert wide.model.arch.local_width >= 4 and "warning" not in capsys.readouterr().out

"""Signal stores and ingest: exact round trips, partition-aligned chunks, resumable writes and
one-line errors for bad sources."""

import math
import wave
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st

from distlg import cli
from distlg.data import ingest as ingest_module
from distlg.data import store
from distlg.data.ingest import IngestError, IngestOptions, ingest
from distlg.data.signal import Signal
from distlg.data.sources.builtin import builtin
from distlg.data.store import StoreError, chunk_shape, open_store
from distlg.geometry import PartitionGrid

QUIET = IngestOptions(progress=False)


def read_all(path) -> np.ndarray:
    return np.asarray(open_store(path).data[...])


def desc(path) -> dict:
    return store.info(store.open_array(path))


# -- chunks ----------------------------------------------------------------------------------------
def aligned(chunk: int, part: int) -> bool:
    return part % chunk == 0 or chunk % part == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 3000), st.integers(1, 300)), min_size=1, max_size=3),
       st.sampled_from([1, 2, 3, 4, 12]))
def test_chunks_always_align_with_partitions(axes, value_bytes):
    shape = tuple(d for d, _ in axes)
    part = tuple(min(p, d) for d, p in axes)
    chunks = chunk_shape(shape, part, value_bytes)
    assert all(aligned(c, p) for c, p in zip(chunks, part))
    assert all(c <= math.ceil(d / p) * p for c, p, d in zip(chunks, part, shape))


@pytest.mark.parametrize("shape,part,value_bytes", [
    ((250, 272, 640), (50, 34, 32), 3),     # bikes, video defaults
    ((1632, 1632, 1632), (204, 204, 204), 1),  # the benchmark volume
    ((1600, 1600, 1600), (32, 32, 32), 1),  # volume defaults
    ((300, 1080, 1920), (50, 32, 32), 3),   # HD video
    ((10_000_000,), (312_500,), 4),         # long float audio
])
def test_chunks_are_half_to_two_megabytes(shape, part, value_bytes):
    chunks = chunk_shape(shape, part, value_bytes)
    assert all(aligned(c, p) for c, p in zip(chunks, part))
    assert 512 << 10 <= math.prod(chunks) * value_bytes <= 2 << 20, chunks


def test_partition_boxes_hold_whole_chunks(tmp_path, shared_data):
    """Every partition box of the grid ingest assumed starts and ends on chunk boundaries (or
    lies inside one chunk): reading a partition reads no chunk of another one's interior."""
    ingest(shared_data / "bikes.mp4", tmp_path / "b.zarr", QUIET)
    d = desc(tmp_path / "b.zarr")
    grid = PartitionGrid(tuple(open_store(tmp_path / "b.zarr").shape), tuple(d["chunking"]["factors"]))
    chunks = d["chunking"]["chunks"]
    assert list(store.open_array(tmp_path / "b.zarr").chunks) == chunks + [3]
    for pid in range(grid.num_partitions):
        for (a, b), c in zip(grid.box(pid), chunks):
            assert a // c == (b - 1) // c or (a % c == 0 and b % c == 0)


# -- round trips -----------------------------------------------------------------------------------
def test_video_round_trip_and_attributes(tmp_path, shared_data):
    source = shared_data / "bikes.mp4"
    result = ingest(source, tmp_path / "bikes.zarr", QUIET)
    signal = open_store(tmp_path / "bikes.zarr")
    assert np.array_equal(read_all(tmp_path / "bikes.zarr"), iio.imread(source, plugin="pyav"))
    assert signal.kind == "video" and signal.shape == (250, 272, 640) and signal.channels == 3
    assert signal.value_range == (0.0, 255.0)
    assert signal.info.fps == 25.0
    assert signal.info.source == "bikes.mp4" and signal.info.source_bytes == source.stat().st_size
    d = desc(tmp_path / "bikes.zarr")
    assert d["axes"] == ["t", "y", "x"] and d["complete"] is True
    assert d["chunking"]["factors"] == [5, 8, 20]  # the trainer's default grid for this clip
    assert result.stored_bytes < result.raw_bytes / 2  # compressed


def test_frame_folder_round_trip_in_natural_order(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (12, 20, 30, 3), dtype=np.uint8)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(frames):  # frame_2 must come before frame_10
        iio.imwrite(folder / f"frame_{i + 1}.png", f)
    (folder / "notes.txt").write_text("not a frame")
    ingest(folder, tmp_path / "f.zarr", IngestOptions(fps=12, progress=False, chunks=[5, 20, 30]))
    assert np.array_equal(read_all(tmp_path / "f.zarr"), frames)
    signal = open_store(tmp_path / "f.zarr")
    assert signal.kind == "video" and signal.info.fps == 12


def test_tiff_stack_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    volume = rng.integers(0, 65536, (21, 33, 17), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "stack.tif", volume)
    ingest(tmp_path / "stack.tif", tmp_path / "t.zarr", IngestOptions(progress=False, chunks=[4, 8, 8]))
    assert np.array_equal(read_all(tmp_path / "t.zarr")[..., 0], volume)
    signal = open_store(tmp_path / "t.zarr")
    assert signal.kind == "volume" and signal.value_range == (0.0, 65535.0)
    assert np.dtype(signal.data.dtype) == np.uint16


def test_wav_round_trip(tmp_path, shared_data):
    from scipy.io import wavfile

    ingest(shared_data / "bach.wav", tmp_path / "bach.zarr", QUIET)
    rate, samples = wavfile.read(shared_data / "bach.wav")
    signal = open_store(tmp_path / "bach.zarr")
    assert np.array_equal(read_all(tmp_path / "bach.zarr")[:, 0], samples)
    assert signal.kind == "audio" and signal.info.sample_rate == rate == 44100
    assert signal.value_range == (-float(np.abs(samples).max()), float(np.abs(samples).max()))


def test_pcm_stereo_wav_round_trip(tmp_path):
    stereo = np.random.default_rng(2).integers(-30000, 30000, (5000, 2), dtype=np.int16)
    with wave.open(str(tmp_path / "s.wav"), "wb") as w:
        w.setnchannels(2), w.setsampwidth(2), w.setframerate(8000)
        w.writeframes(stereo.tobytes())
    ingest(tmp_path / "s.wav", tmp_path / "s.zarr", IngestOptions(progress=False, chunks=[700]))
    assert np.array_equal(read_all(tmp_path / "s.zarr"), stereo)
    assert open_store(tmp_path / "s.zarr").info.sample_rate == 8000


def _tones(tmp_path) -> tuple[np.ndarray, np.ndarray]:
    """A stereo int16 clip (peak 20000) and an 8-bit unsigned one (128 +- 100), as WAV files."""
    from scipy.io import wavfile

    t = np.arange(8000) / 8000
    stereo = (np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 220 * t)], 1) * 20000)
    u8 = np.rint(128 + 100 * np.sin(2 * np.pi * 300 * t)).astype(np.uint8)
    wavfile.write(tmp_path / "stereo16.wav", 8000, np.rint(stereo).astype(np.int16))
    wavfile.write(tmp_path / "u8.wav", 8000, u8)
    return np.rint(stereo).astype(np.int16), u8


@pytest.mark.parametrize("name", ["stereo16", "u8"])
def test_noisy_integer_wav_is_the_clean_signal_plus_noise_in_its_range(tmp_path, name):
    clean = _tones(tmp_path)[name == "u8"].reshape(8000, -1).astype(np.float64)
    ingest(tmp_path / f"{name}.wav", tmp_path / "clean.zarr", QUIET)
    ingest(tmp_path / f"{name}.wav", tmp_path / "noisy.zarr",
           IngestOptions(progress=False, noise="gaussian:0.05"))
    lo, hi = open_store(tmp_path / "clean.zarr").value_range
    assert open_store(tmp_path / "noisy.zarr").value_range == (lo, hi)
    noisy = read_all(tmp_path / "noisy.zarr").astype(np.float64)
    assert lo <= noisy.min() and noisy.max() <= hi
    inside = (noisy > lo) & (noisy < hi)  # not clipped: the noise is N(0, (0.05 (hi - lo))^2)
    assert inside.mean() > 0.5
    residual = (noisy - clean)[inside] / (hi - lo)
    assert abs(residual.mean()) < 0.005 and 0.045 < residual.std() < 0.055


def test_8bit_wav_is_centred_on_128_and_written_back_as_it_was(tmp_path):
    from distlg.rendering.writers import pcm

    u8 = _tones(tmp_path)[1]
    ingest(tmp_path / "u8.wav", tmp_path / "u8.zarr", QUIET)
    signal = open_store(tmp_path / "u8.zarr")
    assert signal.value_range == (28.0, 228.0)  # 128 +- the largest excursion
    x = signal.normalise(read_all(tmp_path / "u8.zarr"))[:, 0]
    assert np.allclose(x, (u8 - 128.0) / 100, atol=1e-6)
    back = pcm(signal.denormalise(x[:, None]))
    assert back.dtype == np.uint8 and np.array_equal(back[:, 0], u8)
    silence = Signal.from_array(np.full(50, 128, np.uint8), "audio")
    assert silence.value_range == (127.0, 129.0) and not silence.normalise(np.uint8(128)).any()
    full = Signal.from_array(np.array([0, 255], np.uint8), "audio")  # (0, 256): +1 is 255
    assert full.denormalise(np.array([[-1.0], [1.0]]))[:, 0].tolist() == [0, 255]


def generated_volume(shape=(37, 29, 23)) -> np.ndarray:
    z, y, x = np.meshgrid(*[np.arange(d, dtype=np.float32) for d in shape], indexing="ij")
    return (np.sin(z / 5) * np.cos(y / 7) + 0.01 * x).astype(np.float32)


def test_generated_volume_round_trip(tmp_path):
    volume = generated_volume()
    np.save(tmp_path / "v.npy", volume)
    ingest(tmp_path / "v.npy", tmp_path / "v.zarr", IngestOptions(progress=False, chunks=[8, 8, 8]))
    assert np.array_equal(read_all(tmp_path / "v.zarr")[..., 0], volume)
    assert open_store(tmp_path / "v.zarr").value_range == (float(volume.min()), float(volume.max()))


def test_raw_big_endian_and_fortran_npy_round_trip(tmp_path):
    volume = (generated_volume((9, 10, 11)) * 1000).astype(">i2")
    volume.tofile(tmp_path / "v.raw")
    ingest(tmp_path / "v.raw", tmp_path / "r.zarr",
           IngestOptions(shape=[9, 10, 11], dtype=">i2", progress=False, chunks=[2, 10, 11]))
    assert np.array_equal(read_all(tmp_path / "r.zarr")[..., 0], volume.astype(np.int16))
    np.save(tmp_path / "f.npy", np.asfortranarray(volume))
    ingest(tmp_path / "f.npy", tmp_path / "f.zarr", IngestOptions(progress=False, chunks=[4, 4, 4]))
    assert np.array_equal(read_all(tmp_path / "f.zarr")[..., 0], volume)


def test_images_and_builtins_round_trip(tmp_path):
    gray = np.random.default_rng(3).integers(0, 256, (40, 50), dtype=np.uint8)
    iio.imwrite(tmp_path / "g.png", gray)
    ingest(tmp_path / "g.png", tmp_path / "g.zarr", QUIET)
    assert np.array_equal(read_all(tmp_path / "g.zarr")[..., 0], gray)
    ingest("builtin:astronaut@64x64", tmp_path / "a.zarr", QUIET)
    signal = open_store(tmp_path / "a.zarr")
    assert signal.kind == "image" and np.array_equal(read_all(tmp_path / "a.zarr"),
                                                     builtin("astronaut@64x64").data)


def test_cli_default_store_under_storage(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["ingest", "builtin:camera@32x32", "--no-progress"]) == 0
    assert "written" in capsys.readouterr().out
    assert open_store(tmp_path / "storage" / "signals" / "camera-32x32.zarr").shape == (32, 32)


# -- completion marker and resume --------------------------------------------------------------------
class Interrupt(Exception):
    pass


def interrupt_after(monkeypatch, slabs: int, starts: list[int]):
    """Make ingest's source stop after ``slabs`` slabs (as a kill would); record start rows."""
    real = ingest_module.open_source

    def open_source(spec, options):
        src = real(spec, options)
        inner = src.slabs

        def slabs_(start, rows):
            starts.append(start)
            for i, slab in enumerate(inner(start, rows)):
                if i == slabs:
                    raise Interrupt
                yield slab

        src.slabs = slabs_
        return src

    monkeypatch.setattr(ingest_module, "open_source", open_source)


@pytest.mark.faults
def test_interrupted_ingest_is_incomplete_then_resumes(tmp_path, monkeypatch):
    volume = generated_volume((40, 12, 12))
    np.save(tmp_path / "v.npy", volume)
    options = IngestOptions(progress=False, chunks=[5, 12, 12])
    starts: list[int] = []
    interrupt_after(monkeypatch, 3, starts)
    with pytest.raises(Interrupt):
        ingest(tmp_path / "v.npy", tmp_path / "v.zarr", options)
    assert desc(tmp_path / "v.zarr")["complete"] is False
    assert not store.is_complete(tmp_path / "v.zarr")
    assert desc(tmp_path / "v.zarr")["ingest"]["done"] == 15
    with pytest.raises(StoreError, match="incomplete.*15 of 40"):
        open_store(tmp_path / "v.zarr")
    monkeypatch.undo()
    interrupt_after(monkeypatch, 10**9, starts)
    assert ingest(tmp_path / "v.npy", tmp_path / "v.zarr", options).status == "resumed"
    assert starts == [0, 15]  # the second run read only what was missing
    assert store.is_complete(tmp_path / "v.zarr")
    assert np.array_equal(read_all(tmp_path / "v.zarr")[..., 0], volume)
    assert ingest(tmp_path / "v.npy", tmp_path / "v.zarr", options).status == "up to date"


@pytest.mark.faults
def test_interrupted_ingest_of_a_changed_source_restarts(tmp_path, monkeypatch):
    np.save(tmp_path / "v.npy", generated_volume((40, 12, 12)))
    options = IngestOptions(progress=False, chunks=[5, 12, 12])
    interrupt_after(monkeypatch, 2, [])
    with pytest.raises(Interrupt):
        ingest(tmp_path / "v.npy", tmp_path / "v.zarr", options)
    monkeypatch.undo()
    changed = generated_volume((30, 12, 12)) + 1
    np.save(tmp_path / "v.npy", changed)
    assert ingest(tmp_path / "v.npy", tmp_path / "v.zarr", options).status == "written"
    assert np.array_equal(read_all(tmp_path / "v.zarr")[..., 0], changed)


def test_complete_store_is_not_replaced_without_overwrite(tmp_path):
    np.save(tmp_path / "a.npy", generated_volume((6, 6, 6)))
    np.save(tmp_path / "b.npy", generated_volume((7, 6, 6)))
    ingest(tmp_path / "a.npy", tmp_path / "s.zarr", QUIET)
    with pytest.raises(IngestError, match="already holds a complete signal.*a.npy.*--overwrite"):
        ingest(tmp_path / "b.npy", tmp_path / "s.zarr", QUIET)
    ingest(tmp_path / "b.npy", tmp_path / "s.zarr", IngestOptions(overwrite=True, progress=False))
    assert open_store(tmp_path / "s.zarr").shape == (7, 6, 6)


# -- bad input -------------------------------------------------------------------------------------
def make_bad(tmp_path: Path, case: str) -> tuple[list[str], str]:
    """Arguments of a failing ``distlg ingest`` and the file its message must name."""
    store_path = str(tmp_path / "out.zarr")
    if case == "video":
        (tmp_path / "clip.mp4").write_bytes(b"\x00\x01 not a video" * 100)
        return [str(tmp_path / "clip.mp4"), store_path], "clip.mp4"
    if case == "frame-sizes":
        (tmp_path / "frames").mkdir()
        iio.imwrite(tmp_path / "frames" / "f1.png", np.zeros((8, 8, 3), np.uint8))
        iio.imwrite(tmp_path / "frames" / "f2.png", np.zeros((8, 9, 3), np.uint8))
        return [str(tmp_path / "frames"), store_path], "f2.png"
    if case == "dtype":
        np.save(tmp_path / "c.npy", np.zeros((4, 4, 4), np.complex64))
        return [str(tmp_path / "c.npy"), store_path], "c.npy"
    if case == "raw-size":
        (tmp_path / "v.raw").write_bytes(bytes(999))
        return [str(tmp_path / "v.raw"), store_path, "--shape", "10", "10", "10", "--dtype", "uint8"], "v.raw"
    if case == "raw-no-shape":
        (tmp_path / "v.raw").write_bytes(bytes(1000))
        return [str(tmp_path / "v.raw"), store_path], "v.raw"
    if case == "image":
        (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
        return [str(tmp_path / "broken.png"), store_path], "broken.png"
    if case == "suffix":
        (tmp_path / "notes.docx").write_bytes(b"x")
        return [str(tmp_path / "notes.docx"), store_path], "notes.docx"
    if case == "tiff-axes":
        tifffile.imwrite(tmp_path / "hyper.tif", np.zeros((2, 3, 2, 8, 8), np.uint8), imagej=True)
        return [str(tmp_path / "hyper.tif"), store_path], "hyper.tif"
    if case == "wav":
        (tmp_path / "a.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
        return [str(tmp_path / "a.wav"), store_path], "a.wav"
    if case == "nan":
        np.save(tmp_path / "n.npy", np.full((3, 3, 3), np.nan, np.float32))
        return [str(tmp_path / "n.npy"), store_path], "n.npy"
    if case == "kind":
        np.save(tmp_path / "k.npy", np.zeros((3, 3, 3), np.uint8))
        return [str(tmp_path / "k.npy"), store_path, "--kind", "audio"], "k.npy"
    if case == "target":
        np.save(tmp_path / "k.npy", np.zeros((3, 3, 3), np.uint8))
        (tmp_path / "precious").mkdir()
        (tmp_path / "precious" / "thesis.tex").write_text("years of work")
        return [str(tmp_path / "k.npy"), str(tmp_path / "precious")], "precious"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["video", "frame-sizes", "dtype", "raw-size", "raw-no-shape", "image",
                                  "suffix", "tiff-axes", "wav", "nan", "kind", "target"])
def test_bad_sources_stop_with_one_line_naming_the_file(tmp_path, capsys, case):
    args, name = make_bad(tmp_path, case)
    assert cli.main(["ingest", *args, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and name in err, err
    if case == "target":
        assert (tmp_path / "precious" / "thesis.tex").is_file()
    else:
        assert store.open_array(tmp_path / "out.zarr") is None or not desc(tmp_path / "out.zarr")["complete"]


def test_opening_what_is_not_a_complete_store_names_it(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        open_store(tmp_path / "missing.zarr")
    (tmp_path / "dir").mkdir()
    with pytest.raises(StoreError, match="not a distlg signal store"):
        open_store(tmp_path / "dir")


def test_bool_signal_denormalises_to_the_nearest_value():
    signal = Signal.from_array(np.zeros((8, 8, 8, 1), bool), "volume")
    out = signal.denormalise(np.array([-1.0, -0.5, -0.01, 0.01, 0.7, 1.0]))
    assert out.tolist() == [False, False, False, True, True, True]


def test_a_bool_mask_is_stored_as_bytes_and_a_model_of_it_renders(tmp_path):
    yy, xx = np.mgrid[:16, :16]
    mask = (yy - 8) ** 2 + (xx - 7) ** 2 < 30
    np.save(tmp_path / "mask.npy", mask)
    ingest(tmp_path / "mask.npy", tmp_path / "mask.zarr", QUIET)
    signal = open_store(tmp_path / "mask.zarr")
    assert signal.info.dtype == np.uint8 and signal.value_range == (0.0, 1.0)
    assert np.array_equal(read_all(tmp_path / "mask.zarr")[..., 0], mask.astype(np.uint8))
    noise = IngestOptions(progress=False, noise="gaussian:0.1")  # about the mask's range too
    ingest(tmp_path / "mask.npy", tmp_path / "noisy.zarr", noise)
    noisy = read_all(tmp_path / "noisy.zarr")
    assert open_store(tmp_path / "noisy.zarr").value_range == (0.0, 1.0)
    assert 0 <= noisy.min() < noisy.max() <= 1
    assert cli.main(["train", "--signal", str(tmp_path / "mask.zarr"), "--out", str(tmp_path / "run"),
                     "--samples-per-partition", "8", "--params", "2000", "--steps", "3", "--threads", "1",
                     "--no-tensorboard", "--no-progress"]) == 0
    assert cli.main(["render", str(tmp_path / "run" / "model"), "--out", str(tmp_path / "r.npy"),
                     "--no-progress"]) == 0
    rendered = np.load(tmp_path / "r.npy")
    assert rendered.dtype == np.uint8 and rendered.shape == (16, 16, 1) and set(np.unique(rendered)) <= {0, 1}


def test_the_ingest_summary_gives_sizes_in_a_unit_that_fits(tmp_path, capsys):
    from distlg.commands.ingest import size

    assert [size(n) for n in (0, 999, 1000, 8_000, 999_949, 999_950, 12_345_678, 2.5e9, 3e13)] == [
        "0 bytes", "999 bytes", "1.0 kB", "8.0 kB", "999.9 kB", "1.0 MB", "12.3 MB", "2.5 GB", "30.0 TB"]
    np.save(tmp_path / "small.npy", np.arange(2000, dtype=np.int32).reshape(40, 50))
    assert cli.main(["ingest", str(tmp_path / "small.npy"), str(tmp_path / "s.zarr"), "--no-progress"]) == 0
    summary = capsys.readouterr().out
    stored = summary.split(" stored in ")[1].split(" (")[0]  # 40 x 50 int32 compressed
    assert "; 8.0 kB stored in " in summary and stored.endswith(" kB") and float(stored[:-3]) > 0


def test_float_audio_in_its_source_units_is_written_to_wav_about_its_silence():
    """A noisy copy of integer audio is float32 in the source's units: its WAV keeps the
    waveform (about 0 for a signed source, about the middle for an unsigned one), not a clip
    to [-1, 1] (which made a square wave of it)."""
    from distlg.rendering.writers import pcm

    signed = np.array([-20000.0, -5.5, 0.0, 12000.0, 32767.0], np.float32)
    assert np.abs(pcm(signed, (-32768.0, 32767.0)).astype(float) - signed).max() <= 1.0
    unsigned = np.array([28.0, 78.0, 128.0, 178.0, 228.0], np.float32)
    assert pcm(unsigned, (28.0, 228.0)).tolist() == [-32767, -16384, 0, 16384, 32767]
    assert pcm(np.array([-0.5, 0.25], np.float32)).tolist() == [-16384, 8192]  # float audio as before

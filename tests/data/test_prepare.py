"""`audiovae prepare`: formats, segment round trip, splits, bad inputs, mel features, atomic output, CLI."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

import audiovae.data.prepare as prep
from audiovae.cli.main import main
from audiovae.config.data import DataConfig, MelConfig
from audiovae.errors import UserError
from audiovae.io.audio import normalize, read_audio, resample

DEMO = Path(__file__).resolve().parents[2] / "data" / "demo"
SEGMENT = 1024  # samples at 16 kHz: short segments keep every test fast
SMALL = DataConfig(segment_samples=SEGMENT, valid_fraction=0.0)
PEAK = 10.0 ** (-1.0 / 20.0)  # the default target: peak at -1 dBFS


def run(inputs, output, data: DataConfig = SMALL, **kwargs) -> prep.PrepareResult:
    kwargs.setdefault("workers", 1)
    return prep.prepare([str(p) for p in inputs], output, data, progress=False, **kwargs)


def open_dataset(folder: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """The manifest and one read-only memmap per split, shaped as the manifest says."""
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    arrays = {}
    for split, info in manifest["splits"].items():
        shape = tuple(info["shape"])
        path = folder / info["file"]
        assert path.stat().st_size == 4 * math.prod(shape)
        arrays[split] = np.memmap(path, np.float32, "r", shape=shape) if shape[0] else np.zeros(shape, np.float32)
    return manifest, arrays


def file_segments(manifest: dict, arrays: dict, relative: str) -> np.ndarray:
    """The segments of one source file, located through its manifest record."""
    (record,) = [r for r in manifest["files"] if r["path"] == relative]
    first = record["first_segment"]
    return np.asarray(arrays[record["split"]][first : first + record["segments"]])


def expected_wave(path: Path, data: DataConfig) -> np.ndarray:
    """What prepare should store for a file before cutting: mono, resampled, normalized, (time,)."""
    samples, rate = read_audio(path)
    return normalize(resample(samples, rate, data.sample_rate), data.normalization, data.level_db)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(folder: Path) -> dict[str, tuple[int, int, str]]:
    return {p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns, sha256(p))
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ---- formats and manifest ------------------------------------------------------------------------------


def test_every_format_is_read_resampled_and_recorded(tmp_path, write_signal):
    files = {
        "u8.wav": dict(sample_rate=8000, subtype="PCM_U8"),
        "s24.wav": dict(sample_rate=44100, subtype="PCM_24", kind="chirp", stop_frequency=6000.0),
        "float.wav": dict(sample_rate=16000, subtype="FLOAT", kind="mix"),
        "stereo.wav": dict(sample_rate=44100, channels=2),
        "low.wav": dict(sample_rate=8000, kind="noise"),
        "a.flac": dict(sample_rate=44100, subtype="PCM_16", kind="chirp", stop_frequency=6000.0),
        "b.ogg": dict(sample_rate=22050, subtype="VORBIS"),
        "sub/nested.wav": dict(sample_rate=16000, subtype="PCM_16", kind="mix"),
    }
    for name, spec in files.items():
        write_signal(f"in/{name}", 0.5, **spec)
    data = dataclasses.replace(SMALL, valid_fraction=0.25)
    result = run([tmp_path / "in"], tmp_path / "out", data)

    manifest, arrays = open_dataset(tmp_path / "out")
    assert (result.files, result.skipped) == (8, 0)
    assert manifest["skipped"] == []
    assert sorted(r["path"] for r in manifest["files"]) == sorted(files)
    assert [r["split"] for r in manifest["files"]].count("valid") == 2  # round(8 * 0.25)
    assert manifest["item_shape"] == [SEGMENT]
    for record in manifest["files"]:
        path = tmp_path / "in" / record["path"]
        info = sf.info(str(path))
        assert record["sample_rate"] == files[record["path"]]["sample_rate"] == info.samplerate
        assert record["silent_segments"] == 0
        assert record["duration_seconds"] == pytest.approx(info.frames / info.samplerate, abs=1e-6)
        assert record["sha256"] == sha256(path)
        wave = expected_wave(path, data)
        # 0.5 s is 8000 samples at 16 kHz: 7 full segments and a 832-sample tail (>= 512) kept padded
        assert len(wave) == 8000 and record["segments"] == 8
        segments = file_segments(manifest, arrays, record["path"])
        np.testing.assert_allclose(segments.reshape(-1)[:8000], wave, atol=1e-6)
        assert np.abs(segments).max() == pytest.approx(PEAK, abs=1e-6)
    for split in prep.SPLITS:
        records = [r for r in manifest["files"] if r["split"] == split]
        assert [r["first_segment"] for r in records] == list(np.cumsum([0] + [r["segments"] for r in records])[:-1])
        assert manifest["splits"][split]["shape"] == [sum(r["segments"] for r in records), SEGMENT]
        assert result.segments[split] == manifest["totals"]["segments"][split]
    assert result.hours == pytest.approx(8 * 0.5 / 3600, abs=1e-6)


def test_stereo_is_mixed_to_the_channel_mean(tmp_path, write_signal):
    path = write_signal("st.wav", 0.25, 16000, channels=2, subtype="FLOAT", kind="noise")
    samples, rate = read_audio(path)
    stereo, _ = sf.read(str(path), dtype="float64")
    assert rate == 16000 and samples.shape == (4000,)
    np.testing.assert_allclose(samples, stereo.mean(axis=1), atol=1e-7)


# ---- segments ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rate, channels, frames",
    [
        (16000, 1, 3 * SEGMENT),  # exact multiple: no tail
        (16000, 1, 3 * SEGMENT + SEGMENT // 2 - 1),  # tail one short of half: dropped
        (16000, 1, 3 * SEGMENT + SEGMENT // 2),  # tail exactly half: kept, padded
        (16000, 1, 4 * SEGMENT - 1),  # tail one short of a segment: kept, padded
        (44100, 2, 9000),  # resampled to 3265 samples: tail 193, dropped
        (44100, 2, 10000),  # resampled to 3628 samples: tail 556, kept
        (8000, 1, 2000),  # resampled to 4000 samples: tail 928, kept
    ],
)
def test_segments_concatenate_back_to_the_normalized_file(tmp_path, write_signal, rate, channels, frames):
    path = write_signal("in/x.wav", 0, rate, channels=channels, kind="mix", frames=frames)
    run([tmp_path / "in"], tmp_path / "out")
    manifest, arrays = open_dataset(tmp_path / "out")

    wave = expected_wave(path, SMALL)
    full, tail = divmod(len(wave), SEGMENT)
    kept = full + (tail >= SEGMENT // 2)
    segments = file_segments(manifest, arrays, "x.wav")
    assert manifest["files"][0]["split"] == "train"
    assert segments.shape == (kept, SEGMENT) == arrays["train"].shape
    flat = segments.reshape(-1)
    np.testing.assert_allclose(flat[: full * SEGMENT], wave[: full * SEGMENT], atol=1e-6)
    if kept > full:
        np.testing.assert_allclose(flat[full * SEGMENT : len(wave)], wave[full * SEGMENT :], atol=1e-6)
        assert not flat[len(wave) :].any()  # zero padding


def test_overlapping_segments(tmp_path):
    (tmp_path / "in").mkdir()
    length = 2860  # full segments start at 0, 768, 1536; 556 samples remain after 2304: one padded segment
    wave = (0.5 * np.sin(2 * np.pi * 300.0 * np.arange(length) / 16000)).astype(np.float32)
    sf.write(str(tmp_path / "in" / "x.wav"), wave, 16000, subtype="FLOAT")
    run([tmp_path / "in"], tmp_path / "out", dataclasses.replace(SMALL, hop_samples=768))
    manifest, arrays = open_dataset(tmp_path / "out")

    padded = np.concatenate([wave * np.float32(PEAK / 0.5), np.zeros(SEGMENT, np.float32)])
    expected = np.stack([padded[start : start + SEGMENT] for start in (0, 768, 1536, 2304)])
    assert manifest["files"][0]["segments"] == 4 and manifest["settings"]["hop_samples"] == 768
    np.testing.assert_allclose(arrays["train"], expected, atol=1e-6)


def test_silent_segments_are_dropped(tmp_path):
    (tmp_path / "in").mkdir()
    gain = PEAK / 0.5  # peak normalization of a file whose peak is 0.5
    level = [0.5, 0.0, 10 ** (-50 / 20) * math.sqrt(2) / gain, 10 ** (-70 / 20) * math.sqrt(2) / gain, 0.5]
    amplitude = np.repeat(level, SEGMENT)  # per segment: loud, zero, -50 dBFS RMS, -70 dBFS RMS, loud
    tone = amplitude * np.sin(2 * np.pi * 1000.0 * np.arange(5 * SEGMENT) / 16000)
    sf.write(str(tmp_path / "in" / "gaps.wav"), tone.astype(np.float32), 16000, subtype="FLOAT")
    run([tmp_path / "in"], tmp_path / "out")
    manifest, arrays = open_dataset(tmp_path / "out")

    (record,) = manifest["files"]
    assert (record["segments"], record["silent_segments"]) == (3, 2)
    kept = (tone * gain).astype(np.float32).reshape(5, SEGMENT)[[0, 2, 4]]
    np.testing.assert_allclose(arrays["train"], kept, atol=1e-6)


@pytest.mark.parametrize(
    "length, segment, hop, starts",
    [
        (0, 4, 4, []),
        (1, 4, 4, []),
        (2, 4, 4, [0]),  # half a segment: one padded segment
        (4, 4, 4, [0]),
        (5, 4, 4, [0]),
        (6, 4, 4, [0, 4]),
        (12, 4, 4, [0, 4, 8]),
        (3, 5, 5, [0]),  # odd segment: ceil(5 / 2) = 3 samples are enough
        (2, 5, 5, []),
        (10, 4, 2, [0, 2, 4, 6]),  # the last full segment ends at the end
        (1024, 1024, 512, [0]),  # exactly one segment long
        (2048, 1024, 512, [0, 512, 1024]),
        (11, 4, 2, [0, 2, 4, 6, 8]),  # 1 sample uncovered: a padded segment with 3 real samples
        (1500, 1024, 256, [0, 256, 512]),
        (1800, 1024, 768, [0, 768]),  # the 8 uncovered samples are less than half a segment
        (1000, 1024, 256, [0]),
        (511, 1024, 256, []),
    ],
)
def test_segment_starts(length, segment, hop, starts):
    assert prep.segment_starts(length, segment, hop) == starts


@pytest.mark.parametrize("hop", [1024, 768, 512, 300, 1])
def test_segment_starts_properties_over_many_lengths(hop):
    half = math.ceil(SEGMENT / 2)
    for length in range(0, 4 * SEGMENT, 37):
        starts = prep.segment_starts(length, SEGMENT, hop)
        full = [s for s in starts if s + SEGMENT <= length]
        assert len(full) == (1 + (length - SEGMENT) // hop if length >= SEGMENT else 0)
        assert starts == [i * hop for i in range(len(starts))]
        assert len(starts) - len(full) <= 1  # at most one padded segment, the last
        if len(starts) > len(full):
            assert length - starts[-1] >= half
        covered = starts[-1] + SEGMENT if starts else 0
        assert length - covered < half  # never drops half a segment of audio
        if hop == SEGMENT:
            assert len(starts) == length // SEGMENT + (length % SEGMENT >= half)


# ---- train/valid split ---------------------------------------------------------------------------------


def sources(count: int) -> list[prep.SourceFile]:
    return [prep.SourceFile(0, Path(f"/x/f{i:02d}.wav"), f"f{i:02d}.wav") for i in range(count)]


@pytest.mark.parametrize("count, fraction, valid", [(20, 0.1, 2), (20, 0.25, 5), (10, 0.3, 3), (7, 0.5, 4),
                                                    (3, 0.1, 1), (2, 0.9, 1), (1, 0.5, 0), (5, 0.0, 0)])
def test_valid_count_is_rounded_share_clamped_to_keep_both_splits(count, fraction, valid):
    splits = prep.assign_splits(sources(count), fraction, seed=0)
    assert len(splits) == count and splits.count("valid") == valid


def test_split_depends_on_seed_only():
    files = sources(20)
    first = prep.assign_splits(files, 0.2, seed=0)
    assert prep.assign_splits(files, 0.2, seed=0) == first
    assert prep.assign_splits(files[::-1], 0.2, seed=0)[::-1] == first  # not on the order found
    assert prep.assign_splits(files, 0.2, seed=1) != first
    assert prep.assign_splits(files, 0.2, seed=1).count("valid") == 4


def test_prepare_splits_by_file(tmp_path, write_signal):
    for i in range(10):
        write_signal(f"in/f{i}.wav", 0.2 + 0.05 * i, 16000, kind="mix", frequency=200.0 + 50 * i, seed=i)
    data = dataclasses.replace(SMALL, valid_fraction=0.3, split_seed=7)
    run([tmp_path / "in"], tmp_path / "out", data)
    manifest, arrays = open_dataset(tmp_path / "out")

    names = [r["path"] for r in manifest["files"]]
    assert len(names) == len(set(names)) == 10
    assert [r["split"] for r in manifest["files"]].count("valid") == 3
    expected = prep.assign_splits(prep.find_audio([tmp_path / "in"]), 0.3, 7)
    assert [r["split"] for r in manifest["files"]] == expected
    # each split holds exactly its files' segments, in order, so no file's audio is in both
    for split in prep.SPLITS:
        cuts = [prep.cut_segments(expected_wave(tmp_path / "in" / r["path"], data), SEGMENT, SEGMENT)
                for r in manifest["files"] if r["split"] == split]
        np.testing.assert_allclose(arrays[split], np.concatenate(cuts), atol=1e-6)


def test_output_does_not_depend_on_worker_count(tmp_path, write_signal):
    for i in range(6):
        write_signal(f"in/f{i}.wav", 0.3, 22050 if i % 2 else 16000, kind="mix", seed=i)
    (tmp_path / "in" / "bad.wav").write_text("not audio")
    data = dataclasses.replace(SMALL, valid_fraction=0.34)
    run([tmp_path / "in"], tmp_path / "one", data, workers=1)
    run([tmp_path / "in"], tmp_path / "two", data, workers=2)
    for name in ("train.f32", "valid.f32"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    one, two = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("one", "two"))
    assert one["splits"]["valid"]["shape"][0] > 0 and one["splits"]["train"]["shape"][0] > 0
    for key in ("files", "skipped", "splits", "totals", "settings"):
        assert one[key] == two[key]


# ---- bad inputs ----------------------------------------------------------------------------------------


def write_bad(folder: Path, kind: str) -> Path:
    path = folder / f"{kind}.wav"
    if kind == "unreadable":
        path.write_text("this is a text file, not a WAV\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "zero_length":
        sf.write(str(path), np.zeros((0, 1), np.float32), 16000)
    elif kind == "nan":
        sf.write(str(path), np.full(3000, np.nan, np.float32), 16000, subtype="FLOAT")
    elif kind == "too_short":
        sf.write(str(path), 0.5 * np.ones(SEGMENT // 2 - 1, np.float32), 16000)
    elif kind == "silent":
        sf.write(str(path), np.zeros(5000, np.float32), 16000)
    return path


@pytest.mark.parametrize("kind, reason", [
    ("unreadable", "not readable as audio ("),
    ("empty", "empty file (0 bytes)"),
    ("zero_length", "no audio samples (zero-length)"),
    ("nan", "contains 3000 NaN or infinite samples"),
    ("too_short", "too short (0.032 s; a segment is 0.064 s, at least half of one is needed)"),
    ("silent", "silent (every segment below -60 dBFS; loudest -inf dBFS)"),
])
def test_bad_file_is_skipped_with_a_warning(tmp_path, write_signal, capsys, kind, reason):
    write_signal("in/good.wav", 0.2, 16000)
    bad = write_bad(tmp_path / "in", kind)
    result = run([tmp_path / "in"], tmp_path / "out")

    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"warning: skipped {bad}: {reason}")
    manifest, arrays = open_dataset(tmp_path / "out")
    assert (result.files, result.skipped) == (1, 1)
    (skipped,) = manifest["skipped"]
    assert skipped["path"] == bad.name and skipped["reason"].startswith(reason)
    assert [r["path"] for r in manifest["files"]] == ["good.wav"]
    assert arrays["train"].shape == (3, SEGMENT)  # 3200 samples: 3 full + a 128-sample tail, dropped


def test_file_between_half_and_one_segment_is_padded(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    length = SEGMENT * 3 // 4
    samples = np.linspace(-0.5, 0.5, length, dtype=np.float32)
    sf.write(str(tmp_path / "in" / "half.wav"), samples, 16000, subtype="FLOAT")
    run([tmp_path / "in"], tmp_path / "out")
    manifest, arrays = open_dataset(tmp_path / "out")

    assert "warning" not in capsys.readouterr().err
    assert arrays["train"].shape == (1, SEGMENT) and manifest["files"][0]["segments"] == 1
    np.testing.assert_allclose(arrays["train"][0, :length], samples * (PEAK / 0.5), atol=1e-6)
    assert not arrays["train"][0, length:].any()


def test_no_usable_audio_is_an_error(tmp_path):
    (tmp_path / "in").mkdir()
    for kind in ("unreadable", "empty", "silent"):
        write_bad(tmp_path / "in", kind)
    with pytest.raises(UserError, match="no usable audio in .*all 3 files were skipped"):
        run([tmp_path / "in"], tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_no_audio_files_is_an_error(tmp_path):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    (tmp_path / "in" / "notes.txt").write_text("hello")
    with pytest.raises(UserError, match="no audio files .* found in"):
        run([tmp_path / "in"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ---- mel features --------------------------------------------------------------------------------------


def test_mel_features(tmp_path):
    import torch

    from audiovae.dsp.transforms import log_mel, mel_filterbank

    mel = MelConfig(n_fft=512, hop_length=128, n_mels=40, f_min=20.0, f_max=7000.0, log_floor=1e-4)
    data = DataConfig(features="mel", segment_samples=4096, mel=mel, valid_fraction=0.0)
    rate, tone = 16000, 1000.0
    time = np.arange(4 * 4096) / rate
    amplitude = np.where(time < 2 * 4096 / rate, 0.05, 0.5)  # 2 quiet segments, then 2 ten times louder
    (tmp_path / "in").mkdir()
    sf.write(str(tmp_path / "in" / "tone.wav"), (amplitude * np.sin(2 * np.pi * tone * time)).astype(np.float32),
             rate, subtype="FLOAT")
    run([tmp_path / "in"], tmp_path / "out", data)
    manifest, arrays = open_dataset(tmp_path / "out")

    frames = arrays["train"]
    assert frames.shape == (4, 40, 4096 // 128) and manifest["item_shape"] == [40, 32]
    assert manifest["settings"]["mel"] == dataclasses.asdict(mel)
    assert manifest["settings"]["features"] == "mel"
    assert np.isfinite(frames).all() and frames.min() >= math.log(1e-4) - 1e-6
    wave = expected_wave(tmp_path / "in" / "tone.wav", data)
    direct = log_mel(torch.from_numpy(wave[:4096]), rate, 512, 128, 40, 20.0, 7000.0, 1e-4)[..., :32]
    np.testing.assert_allclose(frames[0], direct.numpy(), atol=1e-4)

    tone_bin = int(mel_filterbank(512, 40, rate, 20.0, 7000.0)[round(tone * 512 / rate)].argmax())
    quiet, loud = frames[:2].mean(axis=(0, 2)), frames[2:].mean(axis=(0, 2))  # (n_mels,)
    assert int(loud.argmax()) == int(quiet.argmax()) == tone_bin
    assert loud[tone_bin] - quiet[tone_bin] == pytest.approx(math.log(10.0), abs=0.01)


# ---- output folder: force, atomicity, inputs never touched ---------------------------------------------


def test_existing_output_needs_force(tmp_path, write_signal):
    write_signal("in/a.wav", 0.3, 16000)
    run([tmp_path / "in"], tmp_path / "out")
    before = snapshot(tmp_path / "out")
    longer = dataclasses.replace(SMALL, segment_samples=2048)
    with pytest.raises(UserError, match="already exists; pass --force"):
        run([tmp_path / "in"], tmp_path / "out", longer)
    assert snapshot(tmp_path / "out") == before

    run([tmp_path / "in"], tmp_path / "out", longer, force=True)
    manifest, arrays = open_dataset(tmp_path / "out")
    assert arrays["train"].shape == (2, 2048) and manifest["settings"]["segment_samples"] == 2048
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]  # no temp or old folders left


@pytest.mark.parametrize("existing", [False, True])
def test_failure_midway_leaves_no_output(tmp_path, write_signal, monkeypatch, existing):
    for i in range(3):
        write_signal(f"in/f{i}.wav", 0.2, 16000, seed=i)
    if existing:
        run([tmp_path / "in"], tmp_path / "out")
        before = snapshot(tmp_path / "out")
    original = prep.process_file
    calls = []

    def fail_after_one(task):
        calls.append(task)
        if len(calls) > 1:
            raise RuntimeError("disk on fire")
        return original(task)

    monkeypatch.setattr(prep, "process_file", fail_after_one)
    with pytest.raises(RuntimeError, match="disk on fire"):
        run([tmp_path / "in"], tmp_path / "out", force=True)
    assert len(calls) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == (["in", "out"] if existing else ["in"])
    if existing:
        assert snapshot(tmp_path / "out") == before


def test_inputs_are_never_modified(tmp_path, write_signal):
    write_signal("in/a.wav", 0.3, 44100, channels=2)
    write_signal("in/deep/b.flac", 0.3, 8000)
    write_bad(tmp_path / "in", "unreadable")
    write_bad(tmp_path / "in", "silent")
    before = snapshot(tmp_path / "in")
    run([tmp_path / "in"], tmp_path / "out")
    assert snapshot(tmp_path / "in") == before


@pytest.mark.parametrize("output", ["in/prepared", "in", "in/deep/er"])
def test_output_inside_an_input_is_refused(tmp_path, write_signal, output):
    write_signal("in/a.wav", 0.3, 16000)
    before = snapshot(tmp_path / "in")
    with pytest.raises(UserError, match="inside the input folder"):
        run([tmp_path / "in"], tmp_path / output, force=True)
    assert snapshot(tmp_path / "in") == before
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == ["a.wav"]


@pytest.mark.parametrize("input_name", ["data/raw", "data/raw/a.wav"])
def test_output_containing_an_input_is_refused(tmp_path, write_signal, input_name):
    write_signal("data/raw/a.wav", 0.3, 16000)
    before = snapshot(tmp_path / "data")
    try:
        with pytest.raises(UserError, match="input"):
            run([tmp_path / input_name], tmp_path / "data", force=True)
    finally:
        assert snapshot(tmp_path / "data") == before


# ---- command line --------------------------------------------------------------------------------------


def test_cli_prepare_prints_the_summary(tmp_path, write_signal):
    for i in range(3):
        write_signal(f"in/f{i}.wav", 0.5, 16000, seed=i)
    result = CliRunner().invoke(main, ["prepare", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-q",
                                       "--workers", "1", "--segment-samples", "1024", "--valid-fraction", "0.34"])
    assert result.exit_code == 0, result.output
    summary, following = result.stdout.strip().splitlines()
    assert summary == f"wrote {tmp_path / 'out'}: 3 files (0.000 h), 16 train / 8 valid segments, 0 skipped"
    assert following == f"next: audiovae train RECIPE.yaml --set data.folder={tmp_path / 'out'}"
    assert open_dataset(tmp_path / "out")[0]["splits"]["valid"]["shape"] == [8, 1024]


def test_cli_recipe_conflicting_flag_is_one_line(tmp_path, write_signal):
    write_signal("in/a.wav", 0.3, 16000)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: {sample_rate: 16000, segment_samples: 4096}\n")
    result = CliRunner().invoke(main, ["prepare", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-q",
                                       "--recipe", str(recipe), "--sample-rate", "22050"])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: --sample-rate disagrees with")
    assert "data.sample_rate=16000" in result.stderr
    assert not (tmp_path / "out").exists()


def test_cli_missing_input_folder(tmp_path):
    result = CliRunner().invoke(main, ["prepare", str(tmp_path / "nope"), "-o", str(tmp_path / "out"), "-q"])
    assert result.exit_code == 1
    assert result.stderr == f"error: {tmp_path / 'nope'}: no such folder\n"


# ---- the bundled demo corpus ---------------------------------------------------------------------------


def test_demo_corpus(tmp_path):
    result = prep.prepare([str(DEMO)], tmp_path / "p", DataConfig(), workers=1, progress=False)
    manifest, arrays = open_dataset(tmp_path / "p")
    assert (result.files, result.skipped) == (68, 0)
    assert result.segments["valid"] >= 1 and arrays["valid"].shape[0] == result.segments["valid"]
    assert [r["split"] for r in manifest["files"]].count("valid") == 7  # round(68 * 0.1)
    assert {r["sample_rate"] for r in manifest["files"]} == {16000}
    assert result.hours == pytest.approx(sum(sf.info(str(p)).duration for p in DEMO.glob("*.wav")) / 3600,
                                         abs=1e-5)


def test_mp3_is_read_where_libsndfile_decodes_it(tmp_path, write_signal):
    if "MP3" not in sf.available_formats():
        pytest.skip(f"libsndfile {sf.__libsndfile_version__} has no MP3 support")
    write_signal("in/song.mp3", 1.0, 22050, subtype="MPEG_LAYER_III", frequency=330.0)
    result = prep.prepare([tmp_path / "in"], tmp_path / "out", DataConfig(segment_samples=4096), workers=1,
                          progress=False)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert result.files == 1 and manifest["files"][0]["sample_rate"] == 22050
    assert manifest["files"][0]["duration_seconds"] == pytest.approx(1.0, abs=0.1)  # MP3 pads a little

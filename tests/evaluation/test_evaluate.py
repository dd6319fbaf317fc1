"""Metrics on cases with known answers, and `audiovae evaluate` on a tiny trained run."""

from __future__ import annotations

import csv
import json
import tracemalloc

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TINY_RATE, synthesize, write_signal

import audiovae.evaluation.evaluate
import audiovae.io.audio
from audiovae.cli.main import main
from audiovae.evaluation import perceptual
from audiovae.evaluation.evaluate import block_candidates, evaluate, format_table
from audiovae.evaluation.measures import CANDIDATES, OPUS_FIXED, Measures, Setting, Tally
from audiovae.evaluation.metrics import (
    SI_SDR_CAP_DB,
    frechet_distance,
    log_mel_features,
    mel_distance_np,
    mu_law_reference,
    opus_available,
    si_sdr,
    stft_distance_np,
)

RATE = 16000


def tone(seconds: float = 1.0, frequency: float = 440.0) -> np.ndarray:
    return synthesize(seconds, RATE, frequency=frequency)[:, 0]


def test_identical_signals_have_zero_distance_and_capped_si_sdr():
    x = synthesize(1.0, RATE, kind="mix")[:, 0]
    assert mel_distance_np(x, x, RATE) == 0.0
    assert stft_distance_np(x, x) == 0.0
    assert si_sdr(x, x) == SI_SDR_CAP_DB
    assert si_sdr(x, 0.3 * x) == SI_SDR_CAP_DB  # scale invariant


def test_si_sdr_of_added_noise_matches_the_noise_level():
    x = tone()
    noise = np.random.default_rng(0).standard_normal(len(x)).astype(np.float32)
    noise *= np.sqrt(np.mean(x**2) / np.mean(noise**2)) * 10 ** (-20 / 20)  # 20 dB below the signal
    assert si_sdr(x, x + noise) == pytest.approx(20.0, abs=0.3)


def test_si_sdr_falls_with_delay():
    x = synthesize(1.0, RATE, kind="noise")[:, 0]
    delayed = np.concatenate([np.zeros(8, np.float32), x[:-8]])
    assert si_sdr(x, delayed) < 0.5  # white noise shifted by 8 samples is almost uncorrelated


def test_spectral_distances_grow_with_the_error():
    x = tone()
    rng = np.random.default_rng(1)
    mels, stfts = [], []
    for level in (0.001, 0.01, 0.1):
        y = x + level * rng.standard_normal(len(x)).astype(np.float32)
        mels.append(mel_distance_np(x, y, RATE))
        stfts.append(stft_distance_np(x, y))
    assert mels == sorted(mels) and mels[0] > 0
    assert stfts == sorted(stfts) and stfts[0] > 0


def test_frechet_distance_is_zero_for_the_same_set_and_large_for_noise_against_a_tone():
    tones = log_mel_features(tone(2.0), RATE)
    noise = log_mel_features(synthesize(2.0, RATE, kind="noise")[:, 0], RATE)
    assert frechet_distance(tones, tones) == pytest.approx(0.0, abs=1e-6)
    halves = frechet_distance(tones[::2], tones[1::2])
    apart = frechet_distance(tones, noise)
    assert apart > 100 * max(halves, 1e-3)


def test_frechet_distance_of_two_gaussians_matches_the_closed_form():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((20000, 3))
    b = rng.standard_normal((20000, 3)) * 2.0 + 1.0
    # |mu|^2 + tr(I + 4I - 2 * 2I) = 3 + 3 * (1 + 4 - 4) = 6
    assert frechet_distance(a, b) == pytest.approx(6.0, rel=0.05)


def test_mu_law_reference_keeps_a_low_tone_and_removes_what_its_bitrate_cannot_carry():
    low, high = tone(1.0, 300.0), tone(1.0, 6000.0)
    coded_low = mu_law_reference(low, RATE, bits_per_second=32000)  # 4 kHz sample rate: 2 kHz band
    coded_high = mu_law_reference(high, RATE, bits_per_second=32000)
    assert len(coded_low) == len(low)
    assert si_sdr(low[1000:-1000], coded_low[1000:-1000]) > 25
    assert np.sqrt(np.mean(coded_high[1000:-1000] ** 2)) < 0.01 * np.sqrt(np.mean(high**2))


def test_evaluate_writes_every_field_and_prints_the_table(tiny_run):
    result = CliRunner().invoke(main, ["evaluate", str(tiny_run), "-q", "--max-files", "2", "--no-perceptual"])
    assert result.exit_code == 0, result.output
    assert "| model |" in result.output and "mu-law at" in result.output and "Frechet" in result.output
    metrics = json.loads((tiny_run / "eval" / "metrics.json").read_text())
    assert metrics["files"] == 2
    for name in ("model", "mu-law reference", "silence"):
        for measure in ("mel_distance", "stft_distance"):
            assert np.isfinite(metrics["reconstruction"][f"{name}/{measure}"])
    assert metrics["reconstruction"]["silence/si_sdr"] is None  # undefined, not a number to compare
    latent = metrics["latent"]
    assert latent["latent_size"] == 4 and len(latent["kl_per_dimension"]) == 4
    assert 0 <= latent["active_dimensions"] <= 4 and latent["kl_total"] > 0
    generation = metrics["generation"]
    assert generation["frechet_prior_vs_heldout"] > 0 and "frechet_heldout_half_vs_half" in generation
    assert metrics["speed"]["encode_real_time_factor"] > 0 and metrics["speed"]["decode_real_time_factor"] > 0
    assert metrics["latent_bits_per_second"] == 4 * TINY_RATE / 64 * 32
    with open(tiny_run / "eval" / "metrics.csv") as handle:
        rows = dict(csv.reader(handle))
    assert rows["metric"] == "value" and "reconstruction.model/mel_distance" in rows
    assert "latent.kl_per_dimension[3]" in rows
    comb = metrics["comb"]
    assert comb["frame_rate_hz"] == TINY_RATE / 64 and 0 < comb["chance"] < 0.1
    for name in ("held-out", "model", "prior samples"):
        assert comb[name] is None or 0 <= comb[name] <= 1
    assert "comb.held-out" in rows and "frame-rate comb" in result.output
    if metrics["opus_bits_per_second"]:  # Opus at 8 and 12 kbit/s beside the one at the latents' rate
        for name, asked in OPUS_FIXED.items():
            assert np.isfinite(metrics["reconstruction"][f"{name}/mel_distance"])
            assert f"reconstruction.{name}/stft_distance" in rows
            reached = metrics["opus_fixed_bits_per_second"][name]
            assert 0.7 * asked < reached < 1.3 * asked and float(rows[f"opus_fixed_bits_per_second.{name}"]) == reached
            assert f"| Opus at {asked / 1000:.0f} kbit/s ({reached / 1000:.1f} reached) |" in result.output


@pytest.mark.skipif(bool(perceptual.missing_packages()), reason="needs the metrics extra")
def test_evaluate_reports_perceptual_measures_beside_their_references(tiny_run):
    result = CliRunner().invoke(main, ["evaluate", str(tiny_run), "-q", "--max-files", "2", "--perceptual"])
    assert result.exit_code == 0, result.output
    assert "| DNSMOS P.835 (16 kHz) |" in result.output and "held-out audio (ceiling)" in result.output
    metrics = json.loads((tiny_run / "eval" / "metrics.json").read_text())
    rec = metrics["reconstruction"]
    for name in ("model", "mu-law reference") + (("opus reference",) if metrics["opus_bits_per_second"] else ()):
        assert 1.0 <= rec[f"{name}/pesq_wb"] <= 4.65 and 0.0 <= rec[f"{name}/stoi"] <= 1.0
    assert "silence/pesq_wb" not in rec  # nothing to judge
    for name in ("held-out", "model", "prior samples"):
        assert all(1.0 <= metrics["dnsmos"][name][part] <= 5.0 for part in ("sig", "bak", "ovrl"))
    assert metrics["dnsmos"]["version"]["speechmos"]
    with open(tiny_run / "eval" / "metrics.csv") as handle:
        rows = dict(csv.reader(handle))
    assert "dnsmos.model.ovrl" in rows and "reconstruction.model/pesq_wb" in rows


def test_evaluate_without_the_metrics_extra_says_so_once_and_still_measures(tiny_run, monkeypatch):
    monkeypatch.setattr(perceptual, "MODULES", ("audiovae_no_such_module",))
    result = CliRunner().invoke(main, ["evaluate", str(tiny_run), "-q", "--max-files", "1"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if "perceptual" in line]
    assert len(lines) == 1 and "pip install 'audiovae[metrics]'" in lines[0]
    metrics = json.loads((tiny_run / "eval" / "metrics.json").read_text())
    assert metrics["dnsmos"] is None and "model/pesq_wb" not in metrics["reconstruction"]


def test_asking_for_perceptual_measures_without_the_extra_fails_before_any_work(tiny_run, monkeypatch):
    monkeypatch.setattr(perceptual, "MODULES", ("audiovae_no_such_module",))

    def no_work(*args, **kwargs):
        raise AssertionError("the model was loaded before the packages were checked")

    monkeypatch.setattr(audiovae.evaluation.evaluate, "load", no_work)
    result = CliRunner().invoke(main, ["evaluate", str(tiny_run), "--perceptual"])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "error: perceptual metrics need audiovae_no_such_module: pip install 'audiovae[metrics]'"]


def _peak_memory_of_evaluate(run, dataset, folder, seconds: float) -> tuple[int, dict]:
    """Peak numpy/Python memory (bytes) of evaluating one held-out file of `seconds` of a 22.05-kHz mix."""
    folder.mkdir()
    audio = write_signal(folder / "long.wav", seconds, 22050, kind="mix", frequency=200.0)
    manifest = json.loads((dataset / "manifest.json").read_text())
    manifest["inputs"] = [str(audio)]
    manifest["files"] = [{"input": 0, "path": audio.name, "split": "valid"}]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    tracemalloc.start()
    try:
        result = evaluate(run, data=folder, progress=False, perceptual_metrics=False, block_seconds=5.0)
        return tracemalloc.get_traced_memory()[1], result.metrics
    finally:
        tracemalloc.stop()


def test_evaluate_streams_long_held_out_files_in_bounded_memory(tiny_run, tiny_dataset, tmp_path, monkeypatch):
    def whole_file_read(*args, **kwargs):
        raise AssertionError("evaluate read a held-out file whole")

    monkeypatch.setattr(audiovae.io.audio, "read_audio", whole_file_read)
    monkeypatch.setattr(audiovae.evaluation.evaluate.Model, "load_audio", whole_file_read)
    monkeypatch.setattr(audiovae.evaluation.evaluate, "opus_available", lambda: False)  # the slowest reference; tested alone
    short, _ = _peak_memory_of_evaluate(tiny_run, tiny_dataset, tmp_path / "short", 20.0)
    long, metrics = _peak_memory_of_evaluate(tiny_run, tiny_dataset, tmp_path / "long", 80.0)
    extra_audio = 60.0 * TINY_RATE * 4  # 60 s more of float32 at the model's rate: 3.8 MB
    assert long - short < 0.2 * extra_audio, f"peak grew by {(long - short) / 1e6:.2f} MB for 60 s more audio"
    assert metrics["files"] == 1 and metrics["audio_seconds"] == pytest.approx(80.0, abs=0.01)
    for name in ("model", "mu-law reference", "silence"):
        assert np.isfinite(metrics["reconstruction"][f"{name}/mel_distance"])
    assert "opus reference/mel_distance" not in metrics["reconstruction"]
    assert any("Opus reference skipped" in note for note in metrics["notes"])


@pytest.mark.skipif(not opus_available(), reason="this libsndfile cannot write Ogg Opus")
@pytest.mark.parametrize("rate", [44100, 16000])
def test_opus_at_8_and_12_kbps_are_rows_at_any_rate_and_reach_about_their_bitrate(rate):
    reference = synthesize(3.0, rate, kind="mix", frequency=330.0)[:, 0]
    tally = Tally()
    candidates = block_candidates(reference, reference, rate, 96000.0, tally, 3.0)
    assert tuple(candidates) == CANDIDATES  # every row, in the table's order
    assert all(len(wave) == len(reference) for wave in candidates.values())
    Measures(Setting(rate, 50.0), perceptual_on=False).block(tally, candidates, reference, reference)
    tally.end_file()
    reached = {name: tally.means(f"{name}/")["bits_per_second"] for name in OPUS_FIXED}
    for name, asked in OPUS_FIXED.items():  # Opus at 48 or 16 kHz, resampled around it, near the rate asked
        assert 0.7 * asked < reached[name] < 1.3 * asked, (name, reached[name])
        assert np.isfinite(tally.means(f"{name}/")["mel_distance"])
    assert tally.means("opus/")["bits_per_second"] > 4 * reached["opus 12 kbps"]  # the latents' rate: far more
    # more bits, a closer copy
    assert tally.means("opus 12 kbps/")["mel_distance"] < tally.means("opus 8 kbps/")["mel_distance"]
    assert tally.means("opus reference/")["mel_distance"] < tally.means("opus 12 kbps/")["mel_distance"]


def test_the_table_shows_the_fixed_opus_rows_and_reads_metrics_written_before_them():
    metrics = {"files": 1, "audio_seconds": 1.0, "checkpoint": "c", "latent_bits_per_second": 96000.0,
               "opus_bits_per_second": 80000.0, "opus_fixed_bits_per_second": {"opus 8 kbps": 7310.0,
                                                                                "opus 12 kbps": 11422.0},
               "reconstruction": {f"{name}/mel_distance": 0.5 for name in CANDIDATES},
               "latent": {"active_dimensions": 1, "latent_size": 1, "kl_total": 1.0, "collapse_warning": None},
               "generation": {"frechet_prior_vs_heldout": 1.0}, "speed": {"device": "cpu", "encode_real_time_factor": 1,
                                                                          "decode_real_time_factor": 1}}
    table = format_table(metrics)
    assert "| Opus at 8 kbit/s (7.3 reached) | 0.500 |" in table
    assert "| Opus at 12 kbit/s (11.4 reached) | 0.500 |" in table
    del metrics["opus_fixed_bits_per_second"]  # a metrics.json of 0.3
    assert "Opus at 8 kbit/s" not in format_table(metrics) and "| Opus at 96 kbit/s (80 reached) |" in format_table(metrics)


def test_blocks_are_contiguous_near_equal_and_leave_no_scrap():
    blocks = audiovae.evaluation.evaluate.block_ranges(16000 * 95, 16000, 30.0)
    assert blocks[0] == (0, blocks[0][1]) and blocks[-1][1] == 16000 * 95 and len(blocks) == 3
    assert all(b[0] == a[1] for a, b in zip(blocks[:-1], blocks[1:], strict=True))  # contiguous, no short scrap at the end
    assert audiovae.evaluation.evaluate.block_ranges(100, 16000, 30.0) == [(0, 100)]


def test_evaluate_measures_the_model_output_at_its_own_level_not_the_peak_safe_written_one(tiny_run, monkeypatch):
    """A reconstruction that peaks past full scale is written quieter as a whole; the measures must not count that
    gain as the model's error. Here the 'model' gives back its input times a gain that takes the input's level to a
    peak of 2: the log-mel distance of that gain in every band, and a note that the file is written 6 dB quieter."""
    import contextlib
    import dataclasses

    real = audiovae.evaluation.evaluate.reconstruction_on_disk
    gains = []

    @contextlib.contextmanager
    def louder(model, source, block_seconds):
        with real(model, source, block_seconds) as streamed:
            source_wave = np.asarray(streamed.source, np.float32)
            gain = 2.0 / float(np.abs(source_wave).max())  # the input's peak to 2 at the input's level
            gains.append(gain)
            output = gain * source_wave * np.float32(streamed.latents.gain)  # at the training level, as decoded
            yield dataclasses.replace(streamed, output=output, peak=float(np.abs(output).max()))

    monkeypatch.setattr(audiovae.evaluation.evaluate, "reconstruction_on_disk", louder)
    metrics = evaluate(tiny_run, max_files=2, perceptual_metrics=False, progress=False).metrics
    # log(gain) in every band above the floor, 0 in the bands silent in both (measured: 1.30 of 1.39); measured
    # after the written file's peak-safe gain, as evaluate did before, the same files scored 0.09
    expected = float(np.mean(np.log(gains)))
    assert expected > 1.0
    assert 0.8 * expected < metrics["reconstruction"]["model/mel_distance"] <= expected + 1e-6
    assert metrics["reconstruction"]["model/si_sdr"] == SI_SDR_CAP_DB  # a gain alone
    (note,) = [n for n in metrics["notes"] if "above full scale" in n]
    assert note.startswith("2 of 2 reconstructions peak above full scale") and "quieter by up to 6.0 dB" in note


def test_evaluate_is_deterministic_for_a_seed(tiny_run):
    keys = ("reconstruction", "comb", "latent", "generation")
    results = []
    for _ in range(2):
        result = CliRunner().invoke(main, ["evaluate", str(tiny_run), "-q", "--max-files", "2", "--seed", "3",
                                           "--no-perceptual"])
        assert result.exit_code == 0, result.output
        metrics = json.loads((tiny_run / "eval" / "metrics.json").read_text())
        results.append({k: metrics[k] for k in keys})
    assert results[0] == results[1]


def test_evaluate_without_held_out_files_is_one_line(tiny_run):
    result = CliRunner().invoke(main, ["evaluate", str(tiny_run), "--split", "valid", "--data", "/nonexistent"])
    assert result.exit_code == 1
    assert result.stderr.strip().startswith("error: /nonexistent") and len(result.stderr.strip().splitlines()) == 1

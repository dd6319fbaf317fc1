"""Perceptual measures (DNSMOS, PESQ-WB, STOI), the frame-rate comb and the Opus reference on signals with
known answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import soundfile as sf
from conftest import synthesize

from audiovae.errors import UserError
from audiovae.evaluation.metrics import (
    comb_chance,
    comb_share,
    mel_distance_np,
    opus_available,
    opus_reference,
    si_sdr,
)

pytest.importorskip("speechmos", reason="needs the metrics extra")
pytest.importorskip("pesq", reason="needs the metrics extra")
pytest.importorskip("pystoi", reason="needs the metrics extra")

from audiovae.evaluation import perceptual  # noqa: E402

RATE = 16000
DEMO = Path(__file__).resolve().parents[2] / "data" / "demo"


def vowel(seconds: float = 3.0, rate: int = RATE, f0: float = 97.0) -> np.ndarray:
    """A voice-like signal: a glottal pulse train (f0 with a slow 4% vibrato) through three formant
    resonators (/a/: 700, 1220, 2600 Hz), with syllable-rate loudness, peak 0.5."""
    t = np.arange(int(seconds * rate)) / rate
    frequency = f0 * (1 + 0.04 * np.sin(2 * np.pi * 0.7 * t))
    phase = np.cumsum(frequency) / rate
    pulses = np.diff(np.floor(phase), prepend=0.0)  # 1 at each glottal closure
    x = pulses
    for formant, bandwidth in ((700, 90), (1220, 110), (2600, 160)):
        radius = np.exp(-np.pi * bandwidth / rate)
        theta = 2 * np.pi * formant / rate
        x = scipy.signal.lfilter([1 - radius], [1, -2 * radius * np.cos(theta), radius**2], x)
    x *= 0.6 + 0.4 * np.sin(2 * np.pi * 4 * t) ** 2
    return (0.5 * x / np.max(np.abs(x))).astype(np.float32)


def demo_speech() -> tuple[np.ndarray, int]:
    samples, rate = sf.read(DEMO / "utt_000_en-029_klatt.wav", dtype="float32")
    return samples, rate


def white_noise(seconds: float = 3.0, rate: int = RATE) -> np.ndarray:
    return synthesize(seconds, rate, kind="noise", amplitude=0.3)[:, 0]


# ---- PESQ and STOI -----------------------------------------------------------------------------------------

def test_pesq_and_stoi_of_speech_against_itself_are_at_the_top_of_their_scales():
    speech, rate = demo_speech()
    assert perceptual.pesq_wb(speech, speech, rate).value > 4.5  # the scale ends at 4.64
    assert perceptual.stoi(speech, speech, rate).value > 0.99


def test_pesq_and_stoi_fall_with_added_noise_and_reach_the_floor_for_noise_alone():
    speech, rate = demo_speech()
    noise = white_noise(len(speech) / rate, rate)[: len(speech)]
    scale = np.sqrt(np.mean(speech**2) / np.mean(noise**2))
    pesqs, stois = [], []
    for snr_db in (30, 10, 0):
        noisy = speech + noise * scale * 10 ** (-snr_db / 20)
        pesqs.append(perceptual.pesq_wb(speech, noisy, rate).value)
        stois.append(perceptual.stoi(speech, noisy, rate).value)
    assert pesqs == sorted(pesqs, reverse=True) and stois == sorted(stois, reverse=True)
    assert perceptual.pesq_wb(speech, noise, rate).value < 1.3  # floor 1.04
    assert perceptual.stoi(speech, noise, rate).value < 0.4


def test_pesq_and_stoi_work_at_other_rates_by_resampling():
    speech, rate = demo_speech()
    from audiovae.io.audio import resample

    at_44k = resample(speech, rate, 44100)
    assert perceptual.pesq_wb(at_44k, at_44k, 44100).value > 4.5
    assert perceptual.stoi(at_44k, at_44k, 44100).value > 0.99


@pytest.mark.parametrize("measure", [perceptual.pesq_wb, perceptual.stoi])
def test_silent_or_too_short_references_give_nan_with_a_reason(measure):
    speech, rate = demo_speech()
    silent = measure(np.zeros(rate), speech[:rate], rate)
    short = measure(speech[:1000], speech[:1000], rate)
    for score, word in ((silent, "silent"), (short, "shorter")):
        assert np.isnan(score.value) and word in score.reason


# ---- DNSMOS ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dnsmos():
    return perceptual.DnsmosScorer()


def test_dnsmos_orders_a_clean_voice_above_white_noise(dnsmos):
    voice = dnsmos(vowel(), RATE)
    noise = dnsmos(white_noise(), RATE)
    assert voice.reason is None and noise.reason is None
    assert 1.0 <= noise.ovrl < 1.6 and noise.bak < 1.6  # noise is all background
    assert voice.ovrl > noise.ovrl + 0.8 and voice.bak > noise.bak + 1.5
    for score in (voice, noise):
        assert 1.0 <= min(score.sig, score.bak, score.ovrl) and max(score.sig, score.bak, score.ovrl) <= 5.0


def test_dnsmos_averages_windows_of_long_audio_and_resamples(dnsmos):
    speech, rate = demo_speech()
    once = dnsmos(speech, rate)
    repeated = dnsmos(np.tile(speech, 14), rate)  # 19.5 s: two windows and the end
    assert repeated.ovrl == pytest.approx(once.ovrl, abs=0.3)
    from audiovae.io.audio import resample

    at_24k = dnsmos(resample(speech, rate, 24000), 24000)
    assert at_24k.ovrl == pytest.approx(once.ovrl, abs=0.1)


def test_dnsmos_of_silence_or_a_scrap_is_nan_with_a_reason(dnsmos):
    silent = dnsmos(np.zeros(3 * RATE, np.float32), RATE)
    scrap = dnsmos(vowel(0.2), RATE)
    assert np.isnan(silent.ovrl) and "silent" in silent.reason
    assert np.isnan(scrap.ovrl) and "shorter" in scrap.reason


def test_dnsmos_version_names_the_models_it_used():
    version = perceptual.dnsmos_version()
    assert version["speechmos"] and len(version["sig_bak_ovr.onnx"]) == 12


def test_require_names_the_install_command_when_a_package_is_missing(monkeypatch):
    monkeypatch.setattr(perceptual, "MODULES", ("audiovae_no_such_module",))
    with pytest.raises(UserError, match=r"audiovae_no_such_module: pip install 'audiovae\[metrics\]'"):
        perceptual.require()


# ---- frame-rate comb ---------------------------------------------------------------------------------------

FRAME_RATE = RATE / 256  # 62.5 Hz


def test_a_frame_periodic_signal_lies_on_the_comb():
    pulses = np.zeros(5 * RATE, np.float32)
    pulses[::256] = 0.5
    pattern = np.tile(np.random.default_rng(0).standard_normal(256), 5 * RATE // 256).astype(np.float32)
    speech = vowel(5.0)[: len(pattern)]
    assert comb_share(pulses, RATE, FRAME_RATE) > 0.9
    assert comb_share(pattern * 0.1, RATE, FRAME_RATE) > 0.9  # the same random frame over and over
    assert comb_share(speech + 0.01 * pattern, RATE, FRAME_RATE) > 0.7  # a faint frame-rate buzz under a voice


def test_speech_and_noise_lie_on_the_comb_only_by_chance():
    chance = comb_chance(RATE, FRAME_RATE)
    assert chance == pytest.approx(3 / 16, abs=0.01)  # 3.9-Hz bins: 3 of every 16 within 4 Hz
    speech, rate = demo_speech()
    assert comb_share(speech, rate, FRAME_RATE) < 0.35
    assert comb_share(vowel(5.0), RATE, FRAME_RATE) < 0.35
    noise = comb_share(white_noise(5.0), RATE, FRAME_RATE)
    assert np.isnan(noise) or noise < 0.35  # the mean of 38 frames is flat: usually no peak at all
    assert np.isnan(comb_share(np.zeros(RATE, np.float32), RATE, FRAME_RATE))


# ---- Opus reference ------------------------------------------------------------------------------------------

@pytest.mark.skipif(not opus_available(), reason="this libsndfile cannot write Ogg Opus")
def test_opus_reference_reaches_about_its_bitrate_and_improves_with_it():
    speech, rate = demo_speech()
    low, high = opus_reference(speech, rate, 12000), opus_reference(speech, rate, 64000)
    assert len(low.samples) == len(high.samples) == len(speech)
    assert 6000 < low.bits_per_second < 20000 and 40000 < high.bits_per_second < 90000
    assert si_sdr(speech, high.samples) > 20  # aligned: the decoder's pre-skip is removed
    assert mel_distance_np(speech, high.samples, rate) < mel_distance_np(speech, low.samples, rate)
    odd = opus_reference(speech[:12345], 22050, 32000)  # an odd rate goes through 24 kHz
    assert len(odd.samples) == 12345

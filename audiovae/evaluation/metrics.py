"""Quality measurements that need no download: SI-SDR, spectral distances, Frechet distance on log-mels,
the frame-rate comb, and two classic codecs (mu-law, Opus) as references at a given bitrate."""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.signal
import soundfile as sf
import torch

from audiovae.dsp.distances import mel_distance, stft_distance

SI_SDR_CAP_DB = 100.0  # identical signals would give +inf; report this instead
COMB_FFT = 4096  # points of the long-term spectrum of the frame-rate comb
COMB_PROMINENCE_DB = 6.0  # a spectral peak must stand this far above its surroundings
COMB_TOLERANCE_HZ = 4.0  # a peak this close to a multiple of the latent frame rate lies on the comb
COMB_FLOOR_DB = 80.0  # the spectrum is floored this far below its maximum: deeper 'peaks' are rounding noise
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)  # the only rates an Opus stream can carry
OPUS_BITRATES = (6000.0, 256000.0)  # libsndfile maps compression_level 1..0 linearly onto this range


def si_sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Scale-invariant signal-to-distortion ratio in dB, capped at SI_SDR_CAP_DB.

    reference, estimate: (samples,). The estimate is projected onto the reference, so a gain does not
    change the value; a delay does.
    """
    reference = np.asarray(reference, np.float64) - np.mean(reference)
    estimate = np.asarray(estimate, np.float64) - np.mean(estimate)
    energy = np.dot(reference, reference)
    if energy == 0:
        return float("nan")
    target = np.dot(estimate, reference) / energy * reference
    noise = estimate - target
    noise_energy = np.dot(noise, noise)
    if noise_energy <= energy * 10 ** (-SI_SDR_CAP_DB / 10):
        return SI_SDR_CAP_DB
    return float(10 * np.log10(np.dot(target, target) / noise_energy))


def _tensor(wave: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(wave, np.float32)).reshape(1, 1, -1)


def mel_distance_np(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
    """Multi-scale mel distance (as in training) between two waveforms of equal length."""
    with torch.no_grad():
        return float(mel_distance(_tensor(reference), _tensor(estimate), sample_rate))


def stft_distance_np(reference: np.ndarray, estimate: np.ndarray,
                     windows: tuple[int, ...] = (2048, 1024, 512, 256, 128)) -> float:
    """Multi-resolution STFT distance (spectral convergence + log magnitude) between two waveforms."""
    with torch.no_grad():
        return float(stft_distance(_tensor(reference), _tensor(estimate), windows))


def log_mel_features(wave: np.ndarray, sample_rate: int, n_mels: int = 64) -> np.ndarray:
    """Per-frame log-mel vectors (frames, n_mels) with ~32 ms windows: the features of the Frechet distance."""
    from audiovae.dsp.transforms import log_mel

    n_fft = 1 << int(round(np.log2(0.032 * sample_rate)))
    with torch.no_grad():
        frames = log_mel(_tensor(wave)[0, 0], sample_rate, n_fft, n_fft // 2, n_mels)
    return frames.T.numpy().astype(np.float64)


@dataclass
class FeatureMoments:
    """Count, sum and sum of outer products of feature rows: a Gaussian fit that does not keep the rows,
    so features of hours of audio can be added a block at a time."""

    count: int = 0
    total: np.ndarray | None = None  # (features,)
    outer: np.ndarray | None = None  # (features, features)

    @classmethod
    def of(cls, features: np.ndarray) -> FeatureMoments:
        moments = cls()
        moments.add(features)
        return moments

    def add(self, features: np.ndarray) -> None:
        """features: (rows, features)."""
        features = np.asarray(features, np.float64)
        if self.total is None:
            self.total = np.zeros(features.shape[1])
            self.outer = np.zeros((features.shape[1], features.shape[1]))
        self.count += len(features)
        self.total += features.sum(axis=0)
        self.outer += features.T @ features

    def __add__(self, other: FeatureMoments) -> FeatureMoments:
        if self.total is None:
            return other
        if other.total is None:
            return self
        return FeatureMoments(self.count + other.count, self.total + other.total, self.outer + other.outer)

    def mean_and_covariance(self) -> tuple[np.ndarray, np.ndarray]:
        """The rows' mean (features,) and unbiased covariance (features, features), as np.cov gives."""
        mean = self.total / self.count
        return mean, (self.outer - self.count * np.outer(mean, mean)) / max(self.count - 1, 1)


def frechet_distance(a: np.ndarray | FeatureMoments, b: np.ndarray | FeatureMoments) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (rows are observations, or their moments).

    |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)); 0 for identical sets.
    """
    a = a if isinstance(a, FeatureMoments) else FeatureMoments.of(a)
    b = b if isinstance(b, FeatureMoments) else FeatureMoments.of(b)
    (mu_a, cov_a), (mu_b, cov_b) = a.mean_and_covariance(), b.mean_and_covariance()
    root = scipy.linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(root).all():
        offset = np.eye(len(mu_a)) * 1e-6
        root = scipy.linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    root = np.real(root)
    value = float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2 * root))
    return max(value, 0.0)


def mu_law_reference(wave: np.ndarray, sample_rate: int, bits_per_second: float) -> np.ndarray:
    """A trivial codec at a given bitrate: low-pass by resampling to bits_per_second / 8 Hz, 8-bit mu-law,
    and back. What a model's latents must beat to be worth their bits."""
    from audiovae.io.audio import resample

    low_rate = int(max(1000, min(sample_rate, round(bits_per_second / 8))))
    low = resample(np.asarray(wave, np.float32), sample_rate, low_rate)
    mu = 255.0
    encoded = np.sign(low) * np.log1p(mu * np.minimum(np.abs(low), 1.0)) / np.log1p(mu)
    quantized = np.round((encoded + 1) / 2 * mu) / mu * 2 - 1
    decoded = np.sign(quantized) * ((1 + mu) ** np.abs(quantized) - 1) / mu
    out = resample(decoded.astype(np.float32), low_rate, sample_rate)
    return np.pad(out, (0, max(0, len(wave) - len(out))))[: len(wave)]


@dataclass(frozen=True)
class CodedAudio:
    """A waveform after a codec round trip, and the bitrate the codec really used (container included)."""

    samples: np.ndarray  # (samples,) at the input's rate and length
    bits_per_second: float


def opus_available() -> bool:
    """Whether the installed libsndfile can write Ogg Opus (it can from 1.0.29 when built with libopus)."""
    return "OPUS" in sf.available_subtypes("OGG")


def opus_reference(wave: np.ndarray, sample_rate: int, bits_per_second: float) -> CodedAudio:
    """Opus (libopus through libsndfile, in memory) at about `bits_per_second`: a real speech/music codec as
    the second bar a model's latents must clear. wave: (samples,) at `sample_rate`.

    libsndfile sets the bitrate from `compression_level` (1 -> 6 kbit/s ... 0 -> 256 kbit/s per channel,
    linearly; its `bitrate_mode` applies to MPEG only). Opus is variable-rate and for narrow input uses less
    than it is offered, so the rate reached is returned beside the audio: from the encoded size without the
    stream headers (about 0.9 kB, which would double the rate of a half-second file), Ogg pages included.
    Opus runs at 8, 12, 16, 24 or 48 kHz; other rates are resampled to the next one up and back.
    """
    from audiovae.io.audio import resample

    wave = np.clip(np.asarray(wave, np.float32), -1.0, 1.0)
    coding_rate = next((r for r in OPUS_RATES if r >= sample_rate), OPUS_RATES[-1])
    low, high = OPUS_BITRATES
    level = float(np.clip((high - bits_per_second) / (high - low), 0.0, 1.0))
    buffer = io.BytesIO()
    sf.write(buffer, resample(wave, sample_rate, coding_rate), coding_rate, format="OGG", subtype="OPUS",
             compression_level=level)
    size = buffer.tell() - _opus_header_bytes(coding_rate)
    buffer.seek(0)
    decoded, _ = sf.read(buffer, dtype="float32")
    out = resample(decoded, coding_rate, sample_rate)
    out = np.pad(out, (0, max(0, len(wave) - len(out))))[: len(wave)]
    return CodedAudio(out, size * 8 / max(len(wave) / sample_rate, 1e-9))


@functools.cache
def _opus_header_bytes(sample_rate: int) -> int:
    """Size of an Ogg Opus stream with no audio: its OpusHead and OpusTags pages."""
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(0, np.float32), sample_rate, format="OGG", subtype="OPUS")
    return buffer.tell()


def long_term_spectrum(wave: np.ndarray, n_fft: int = COMB_FFT, frames_per_read: int = 64) -> np.ndarray:
    """Mean magnitude spectrum (n_fft // 2 + 1,) over Hann-windowed frames with half overlap.

    `wave` may be a memory map: it is read `frames_per_read` frames at a time. Shorter than one frame:
    zero-padded to one.
    """
    hop = n_fft // 2
    window = scipy.signal.get_window("hann", n_fft).astype(np.float32)
    frames = max(1, 1 + (len(wave) - n_fft + hop - 1) // hop) if len(wave) > n_fft else 1
    total = np.zeros(n_fft // 2 + 1)
    for first in range(0, frames, frames_per_read):
        count = min(frames_per_read, frames - first)
        piece = np.asarray(wave[first * hop : (first + count - 1) * hop + n_fft], np.float32)
        piece = np.pad(piece, (0, (count - 1) * hop + n_fft - len(piece)))
        framed = np.lib.stride_tricks.sliding_window_view(piece, n_fft)[::hop]  # (count, n_fft)
        total += np.abs(np.fft.rfft(framed * window, axis=1)).sum(axis=0)
    return total / frames


def comb_share(wave: np.ndarray, sample_rate: int, frame_rate: float) -> float:
    """Share of the long-term spectrum's peaks that lie on the comb of multiples of `frame_rate` (Hz).

    A decoder that paints each latent frame the same way leaves lines at k * frame_rate; audio without such
    structure puts about `comb_chance` of its peaks there by chance. Peaks: prominence
    of at least COMB_PROMINENCE_DB in the dB spectrum (COMB_FFT points), above half the frame rate (a DC
    bump is no comb). NaN when the spectrum has no such peak (silence, a flat spectrum). wave: (samples,).
    A voice whose pitch dwells near a multiple of the frame rate scores high too: compare with the share of
    the reference audio itself.
    """
    spectrum = long_term_spectrum(wave)
    if not np.any(spectrum > 0):
        return float("nan")
    decibels = 20 * np.log10(np.maximum(spectrum, spectrum.max() * 10 ** (-COMB_FLOOR_DB / 20)))
    peaks, _ = scipy.signal.find_peaks(decibels, prominence=COMB_PROMINENCE_DB)
    frequencies = peaks * sample_rate / COMB_FFT
    frequencies = frequencies[frequencies >= frame_rate / 2]
    if len(frequencies) == 0:
        return float("nan")
    distance = np.abs(frequencies - np.round(frequencies / frame_rate) * frame_rate)
    return float(np.mean(distance <= COMB_TOLERANCE_HZ))


def comb_chance(sample_rate: int, frame_rate: float) -> float:
    """The share of peaks on the comb by chance: the share of spectrum bins (above half the frame rate) that
    lie within COMB_TOLERANCE_HZ of a multiple of it. About 2 * COMB_TOLERANCE_HZ / frame_rate, more where
    bins are coarse (16 kHz, 62.5 Hz: 3 of every 16 bins, 0.19, not 0.128)."""
    frequencies = np.arange(COMB_FFT // 2 + 1) * sample_rate / COMB_FFT
    frequencies = frequencies[frequencies >= frame_rate / 2]
    distance = np.abs(frequencies - np.round(frequencies / frame_rate) * frame_rate)
    return float(np.mean(distance <= COMB_TOLERANCE_HZ))


# ---- long samples stay alive: per-window statistics of latent sequences ------------------------------------

def window_statistics(z: np.ndarray, window_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-window mean and std of each latent dim: z (latent, frames) -> two (windows, latent) arrays."""
    count = z.shape[1] // window_frames
    windows = z[:, : count * window_frames].reshape(z.shape[0], count, window_frames)
    return windows.mean(-1).T, windows.std(-1).T


def windows_in_range(samples: np.ndarray, reference: np.ndarray, window_frames: int) -> float:
    """Share of the samples' windows whose per-dim statistics stay in the range of the reference's windows.

    samples, reference: (latent, frames). A window passes when, in every dim, its std lies within half the
    smallest and twice the largest reference window std (a collapse to a constant or an explosion fails),
    and its mean within the reference windows' range of means widened by the reference's std on each side.
    """
    ref_mean, ref_std = window_statistics(reference, window_frames)
    mean, std = window_statistics(samples, window_frames)
    spread = reference.std(axis=1)
    inside = ((std >= 0.5 * ref_std.min(0)) & (std <= 2.0 * ref_std.max(0))
              & (mean >= ref_mean.min(0) - spread) & (mean <= ref_mean.max(0) + spread))
    return float(inside.all(1).mean())

"""Perceptual speech-quality measures whose models ship inside their wheels: DNSMOS P.835, PESQ-WB and STOI.

All three judge 16-kHz speech; audio at other rates is resampled first. The packages are optional
(`pip install 'audiovae[metrics]'`): call `require()` before any work starts, or `missing_packages()` to
decide quietly. Each measure returns NaN with a reason, instead of raising, for input it cannot judge
(silence, too short).
"""

from __future__ import annotations

import hashlib
import importlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from audiovae.errors import UserError
from audiovae.io.audio import resample

RATE = 16000  # what all three measures are defined at
INSTALL = "pip install 'audiovae[metrics]'"
# what the `metrics` extra must make importable; speechmos declares no dependencies but imports the next two
MODULES = ("speechmos", "onnxruntime", "requests", "pesq", "pystoi")
SILENCE_DBFS = -60.0  # RMS below this: nothing to judge
DNSMOS_WINDOW_SECONDS = 9.01  # the P.835 model's fixed input (speechmos.dnsmos.INPUT_LENGTH)
DNSMOS_MIN_SECONDS = 0.5  # shorter input would be tiled more than 18 times to fill one window
PESQ_MIN_SECONDS = 0.25  # pesq's own limit
STOI_MIN_SECONDS = 0.4  # pystoi needs 30 frames of 25.6 ms (at 10 kHz) after dropping silent frames


@dataclass(frozen=True)
class Score:
    """One measure's value, and why it is NaN when it is."""

    value: float
    reason: str | None = None


@dataclass(frozen=True)
class Dnsmos:
    """DNSMOS P.835 mean opinion scores (1-5): speech signal, background noise, overall."""

    sig: float
    bak: float
    ovrl: float
    reason: str | None = None


def missing_packages() -> list[str]:
    """The modules of the `metrics` extra that cannot be imported here."""
    missing = []
    for name in MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def require() -> None:
    """UserError in one line, naming the install command, when a package of the `metrics` extra is missing."""
    missing = missing_packages()
    if missing:
        raise UserError(f"perceptual metrics need {', '.join(missing)}: {INSTALL}")


def dnsmos_version() -> dict[str, str]:
    """What produced the DNSMOS numbers: the speechmos release and the first 12 hex digits of the SHA-256
    of each ONNX model it ships (P.835 sig_bak_ovr, and the P.808 model it also runs)."""
    from importlib.metadata import version

    folder = _dnsmos_folder()
    record = {"speechmos": version("speechmos")}
    for name in ("sig_bak_ovr.onnx", "model_v8.onnx"):
        record[name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()[:12]
    return record


def _dnsmos_folder() -> Path:
    from speechmos import dnsmos

    return Path(dnsmos.__file__).parent / "dnsmos_models"


def _quiet_reason(wave: np.ndarray, minimum_seconds: float, what: str) -> str | None:
    """Why `wave` (16 kHz) cannot be judged, or None."""
    if len(wave) < minimum_seconds * RATE:
        return f"{what} shorter than {minimum_seconds:g} s"
    rms = float(np.sqrt(np.mean(np.square(wave, dtype=np.float64))))
    if rms < 10 ** (SILENCE_DBFS / 20):
        return f"{what} silent (below {SILENCE_DBFS:g} dBFS RMS)"
    return None


def _at_16k(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    return resample(np.asarray(wave, np.float32), sample_rate, RATE)


class DnsmosScorer:
    """DNSMOS P.835 (the ONNX models inside the speechmos wheel) on `threads` CPU threads.

    speechmos's own `run` would open its models on every core; on a shared machine one thread is faster.
    """

    def __init__(self, threads: int = 1):
        import onnxruntime as ort
        from speechmos import dnsmos

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        folder = _dnsmos_folder()

        class _Model(dnsmos.DNSMOS):
            def __init__(self) -> None:  # the parent opens its sessions without options
                self.primary_model_path = str(folder / "sig_bak_ovr.onnx")
                self.onnx_sess = ort.InferenceSession(self.primary_model_path, options,
                                                      providers=["CPUExecutionProvider"])
                self.p808_onnx_sess = ort.InferenceSession(str(folder / "model_v8.onnx"), options,
                                                           providers=["CPUExecutionProvider"])

        self._model = _Model()

    def __call__(self, wave: np.ndarray, sample_rate: int) -> Dnsmos:
        """Scores of one waveform (samples,): the mean over non-overlapping 9.01-s windows, the last one
        aligned to the end of the audio when at least a second is left over. Input shorter than one window is
        repeated to fill it, as speechmos does. (Microsoft's script hops by 1 s; 9x the work, same mean.)"""
        wave = np.clip(_at_16k(wave, sample_rate), -1.0, 1.0)
        reason = _quiet_reason(wave, DNSMOS_MIN_SECONDS, "audio")
        if reason:
            return Dnsmos(float("nan"), float("nan"), float("nan"), reason)
        window = round(DNSMOS_WINDOW_SECONDS * RATE)
        if len(wave) < window:  # repeated to one window here: speechmos would double it past one, 2-3 windows
            wave = np.resize(wave, window)
        starts = list(range(0, len(wave) - window + 1, window))
        if len(wave) > window and len(wave) - (starts[-1] + window) >= RATE:
            starts.append(len(wave) - window)
        scores = np.array([[s["sig_mos"], s["bak_mos"], s["ovrl_mos"]]
                           for s in (self._model(wave[start : start + window], RATE, False) for start in starts)])
        sig, bak, ovrl = (float(v) for v in scores.mean(axis=0))
        return Dnsmos(sig, bak, ovrl)


def pesq_wb(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> Score:
    """Wide-band PESQ (ITU-T P.862.2, MOS-LQO 1.04-4.64) of `estimate` against `reference`, both (samples,)."""
    from pesq import PesqError, pesq

    reference, estimate = _at_16k(reference, sample_rate), _at_16k(estimate, sample_rate)
    reason = _quiet_reason(reference, PESQ_MIN_SECONDS, "reference")
    if reason:
        return Score(float("nan"), reason)
    try:
        return Score(float(pesq(RATE, reference, estimate, "wb")))
    except PesqError as error:
        text = error.args[0].decode() if error.args and isinstance(error.args[0], bytes) else str(error)
        return Score(float("nan"), f"pesq: {text}")


def stoi(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> Score:
    """Short-time objective intelligibility (0-1) of `estimate` against `reference`, both (samples,)."""
    from pystoi import stoi as pystoi_stoi

    reference, estimate = _at_16k(reference, sample_rate), _at_16k(estimate, sample_rate)
    reason = _quiet_reason(reference, STOI_MIN_SECONDS, "reference")
    if reason:
        return Score(float("nan"), reason)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(pystoi_stoi(reference, estimate, RATE))
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        return Score(float("nan"), "reference has too few non-silent frames for STOI")
    return Score(value)

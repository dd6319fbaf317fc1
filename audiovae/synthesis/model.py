"""Synthesis from a trained run: generate, encode, decode, reconstruct and interpolate.

`load()` returns a `Model`, the Python API that the CLI commands call. Long inputs are processed in
chunks of latent frames with a margin of context on both sides that is computed and then thrown away,
so memory stays bounded and chunk joins match a single pass:

    latent frames  |..margin..|=========== kept ===========|..margin..|
    next chunk                              |..margin..|=========== kept ===========|..margin..|
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from audiovae.compute.device import select_device
from audiovae.compute.workers import Workers
from audiovae.config.recipe import ConfigError, Recipe, recipe_from_saved
from audiovae.errors import UserError
from audiovae.io.atomic import file_sha256
from audiovae.io.audio import level_stats, load_for_model, normalization_gain, peak_safe_scale
from audiovae.io.checkpoint import load_checkpoint, weights_sha256
from audiovae.io.run_folder import DEFAULT_RUNS_ROOT, RunFolder, resolve_checkpoint
from audiovae.models import VAE, Posterior, build_model, fold_weight_norm
from audiovae.priors.base import Prior
from audiovae.priors.learned import PriorMismatch, load_learned_prior

CHUNK_FRAMES = 1024  # latent frames per chunk (16 s at 256 samples per frame)
MARGIN_FRAMES: int | None = None  # latent frames of context on each side of a chunk; None: the model's reach
SPLIT_FRAMES = 128  # shortest chunk made to share a sound among CPU workers (and at least 4 margins)


@dataclass
class Latents:
    """An encoded signal: posterior means (latent_size, frames), the waveform length it came from, and the
    gain that brought it to the training loudness (decode divides by it, restoring the input's level)."""

    values: np.ndarray
    samples: int
    gain: float = 1.0


@dataclass
class FrameReconstruction:
    """Latent frames [start, stop) of a sound as the model sees them: its input features and their reconstruction
    from the posterior means, (channels, steps) over the steps of those frames that lie inside the sound, and the
    KL to the prior, (latent_size, stop - start) nats per value."""

    start: int
    stop: int
    features: np.ndarray
    reconstruction: np.ndarray
    kl: np.ndarray


class Model:
    """A trained VAE with its recipe, ready for synthesis. Waveforms are float32 numpy arrays (samples,)."""

    def __init__(self, net: VAE, recipe: Recipe, checkpoint: Path, device: torch.device,
                 learned_prior: Prior | None = None, workers: int | None = None, weights_sha256: str | None = None,
                 prior_refusal: str | None = None):
        """workers: CPU threads for encoding and decoding, shared among up to 4 chunks at once (default:
        torch's thread count on the CPU; 1 on CUDA, one chunk at a time); audiovae.compute.workers says why."""
        self.net = fold_weight_norm(net).eval().to(device)
        self.workers = Workers(workers or (torch.get_num_threads() if device.type == "cpu" else 1))
        self.learned_prior = learned_prior  # the run's learned prior over latent sequences, when it has one
        self.weights_sha256 = weights_sha256  # the VAE's identity (io.checkpoint.weights_sha256 of its saved weights)
        self.prior_refusal = prior_refusal  # why the run's learned prior cannot be used with this VAE, if it cannot
        self.recipe = recipe
        self.representation = recipe.data.representation
        self.checkpoint = checkpoint
        self.device = device
        self._hash: str | None = None
        self._context: int | None = None

    # ---- facts ------------------------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.recipe.data.sample_rate

    @property
    def frame_samples(self) -> int:
        """Waveform samples per latent frame (not to be confused with data.hop_samples, between segments)."""
        return self.net.hop * self.representation.samples_per_step

    @property
    def latent_size(self) -> int:
        return self.net.latent_size

    @property
    def labels(self) -> tuple[str, ...]:
        """A conditional run's label names (model.labels; docs/conditional.md), else ()."""
        return tuple(getattr(self.recipe.model, "labels", ()))

    def with_label(self, label: str | None) -> Model:
        """This model under one label: encode, decode, generate and the learned prior all take it. None: the model
        itself. UserError for a label on an unconditional run, an unknown label (naming the known ones), and
        None on a conditional run (audiovae.synthesis.labels)."""
        from audiovae.synthesis.labels import bind_label

        return bind_label(self, label)

    def labels_in_turn(self, n: int, label: str | Sequence[str] | None = None) -> list[str] | None:
        """The label of each of n sounds: the given one, the given ones in turn, or (None on a conditional run) the
        run's labels in turn; None for an unconditional run without labels or a model bound to one (with_label)."""
        from audiovae.synthesis.labels import labels_in_turn

        return labels_in_turn(self, n, label)

    @property
    def checkpoint_sha256(self) -> str:
        if self._hash is None:
            self._hash = file_sha256(self.checkpoint)
        return self._hash

    def compression_ratio(self) -> float:
        """Waveform samples per second over latent values per second."""
        return self.frame_samples / self.latent_size

    @property
    def run(self) -> RunFolder:
        """The run folder the checkpoint belongs to (the folder above the one that holds it)."""
        return RunFolder.of_checkpoint(self.checkpoint)

    # ---- streamed synthesis: what generation, long files, evaluation and the benchmarks build on ------------
    def frames_for(self, samples: int) -> int:
        """Latent frames that decode to at least `samples` waveform samples (a causal model's latency included)."""
        return max(1, self.net.latent_frames(math.ceil(samples / self.representation.samples_per_step)))

    def _to_features(self, wave: np.ndarray) -> torch.Tensor:
        """(samples,) -> model input (1, channels, steps)."""
        x = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)).to(self.device).reshape(1, -1)
        return self.representation.from_audio(x)

    def _chunk_to_wave(self, y: torch.Tensor, first_step: int) -> np.ndarray:
        """Model output (batch, channels, steps) -> waveforms (batch, steps * samples per step); first_step: the
        index of y's first step in the whole sound."""
        return self.representation.to_audio(y, self.recipe.synthesis, first_step).float().cpu().numpy()

    def _margin(self) -> int:
        if MARGIN_FRAMES is not None:
            return MARGIN_FRAMES if self.net.frames_see_neighbours else 0
        if self._context is None:
            self._context = self.net.context_frames()  # measured once: 17 frames for quickstart, 30 for speech
        return self._context

    def chunks(self, frames: int) -> Iterator[tuple[int, int, int, int]]:
        """How a sound of `frames` latent frames is cut for synthesis: (start, stop, lo, hi) latent-frame ranges,
        keep [start, stop), compute [lo, hi) for context (the module docstring draws it).
        A waveform model's sound shorter than a chunk per worker is split among the workers, down to
        SPLIT_FRAMES a chunk (not a mel model's: Griffin-Lim makes each chunk's phase on its own)."""
        margin, size = self._margin(), CHUNK_FRAMES
        if self.workers.count > 1 and self.representation.is_waveform:
            size = min(CHUNK_FRAMES, max(SPLIT_FRAMES, 4 * margin, math.ceil(frames / self.workers.count)))
        for start in range(0, frames, size):
            stop = min(start + size, frames)
            yield start, stop, max(0, start - margin), min(frames, stop + margin)

    @torch.no_grad()
    def _encode_wave(self, wave: np.ndarray, gain: float) -> Posterior:
        """Chunked posterior of wave * gain: mean, logvar (1, latent, frames).

        `wave` may be a memory map: only one chunk and its margins are read at a time.
        """
        hop = self.frame_samples

        chunks = list(self.chunks(self.frames_for(len(wave))))

        def jobs():
            for start, stop, lo, hi in chunks:
                piece = np.zeros((hi - lo) * hop, np.float32)
                source = np.asarray(wave[lo * hop : hi * hop], dtype=np.float32)
                piece[: len(source)] = source * np.float32(gain)
                yield self._encode_chunk, (piece, start - lo, stop - lo)

        means, logvars = zip(*self.workers.in_order(jobs(), parallel=len(chunks) > 1), strict=True)
        return Posterior(torch.cat(means, dim=-1), torch.cat(logvars, dim=-1))

    def _encode_chunk(self, piece: np.ndarray, first: int, last: int) -> tuple[torch.Tensor, torch.Tensor]:
        posterior = self.net.encode(self._to_features(piece))
        return posterior.mean[..., first:last], posterior.logvar[..., first:last]

    @torch.no_grad()
    def reconstruction_chunks(self, wave: np.ndarray) -> Iterator[FrameReconstruction]:
        """Features, reconstruction and KL of `wave` (samples,) at the training level, a chunk of latent frames at a
        time, in order: what anomaly scoring measures. `wave` may be a memory map: one chunk and its margins are
        read at a time. Each chunk is computed with two margins of context (the encoder's reach, then the
        decoder's) and one frame more for the analysis window, so chunks agree with one pass over the sound."""
        self.with_label(None)  # a conditional run needs its label
        gain, hop, steps_per_frame = self._gain(wave), self.frame_samples, self.net.hop
        steps = max(1, len(wave) // self.representation.samples_per_step)  # what from_audio makes of the whole
        frames = self.frames_for(len(wave))
        margin = 2 * self._margin() + 1
        for start, stop, _, _ in self.chunks(frames):
            lo, hi = max(0, start - margin), min(frames, stop + margin)
            piece = np.zeros((hi - lo) * hop, np.float32)
            source = np.asarray(wave[lo * hop : hi * hop], dtype=np.float32)
            piece[: len(source)] = source * np.float32(gain)
            x = self._to_features(piece)  # (1, channels, (hi - lo) * steps_per_frame)
            posterior = self.net.encode(x)
            y = self.net.decode(posterior.mean, x.shape[-1])
            first, last = (start - lo) * steps_per_frame, min((stop - lo) * steps_per_frame, steps - lo * steps_per_frame)
            yield FrameReconstruction(start, stop, x[0, :, first:last].float().cpu().numpy(),
                                      y[0, :, first:last].float().cpu().numpy(),
                                      posterior.kl()[0, :, start - lo : stop - lo].float().cpu().numpy())

    def decode_pieces(self, z: torch.Tensor) -> Iterator[np.ndarray]:
        """Chunked decode of z (batch, latent_size, frames) at the training level: waveform pieces (batch,
        samples) in order, one chunk in memory at a time."""
        return self.decode_stream([z], z.shape[-1])

    @torch.no_grad()
    def decode_stream(self, z_chunks: Iterable[torch.Tensor], frames: int) -> Iterator[np.ndarray]:
        """Decode latents arriving in chunks (batch, latent, n), `frames` in all, into waveform pieces
        (batch, samples), exactly as one chunked decode of them all would; holds one chunk and its margins."""
        hop, margin, source = self.frame_samples, self._margin(), iter(z_chunks)
        chunks = list(self.chunks(frames))

        def jobs():
            buffer, offset = None, 0  # buffer holds latent frames [offset, offset + its length)
            for start, stop, lo, hi in chunks:
                while buffer is None or offset + buffer.shape[-1] < hi:
                    more = next(source).to(self.device)
                    buffer = more if buffer is None else torch.cat([buffer, more], dim=-1)
                yield self._decode_chunk, (buffer[..., lo - offset : hi - offset], lo, (start - lo) * hop, (stop - lo) * hop)
                keep_from = max(0, stop - margin)  # the next chunk's context starts here
                buffer, offset = buffer[..., keep_from - offset :], keep_from

        yield from self.workers.in_order(jobs(), parallel=len(chunks) > 1)

    def _decode_chunk(self, z: torch.Tensor, lo: int, first: int, last: int) -> np.ndarray:
        """Samples [first, last) of the decoded latent frames [lo, lo + z's length) of a sound."""
        return self._chunk_to_wave(self.net.decode(z), lo * self.net.hop)[:, first:last]

    def decode_all(self, z: torch.Tensor, samples: int) -> np.ndarray:
        """Chunked decode of z (batch, latent_size, frames) into (batch, samples) at the training level, cropped or
        zero-padded to `samples`; no level applied (decode and generate add theirs)."""
        return self._join(self.decode_pieces(z), samples)

    @staticmethod
    def _join(pieces: Iterable[np.ndarray], samples: int) -> np.ndarray:
        """Decoded pieces (batch, n) -> (batch, samples), cropped or zero-padded."""
        wave = np.concatenate(list(pieces), axis=1)[:, :samples]
        return np.pad(wave, ((0, 0), (0, samples - wave.shape[1]))) if wave.shape[1] < samples else wave

    def level_scales(self, wave: np.ndarray) -> tuple[float, float]:
        """(normalization gain, peak-safe scale) that bring generated audio (samples,) to the training level and
        never above full scale, applied one after the other as float32 products. `wave` may be a memory map."""
        data = self.recipe.data
        peak, rms = level_stats(wave)
        gain = normalization_gain(peak, rms, data.normalization, data.level_db)
        return gain, peak_safe_scale(float(np.float32(peak) * np.float32(gain)))  # the peak after the gain

    def at_training_level(self, wave: np.ndarray) -> np.ndarray:
        """Generated audio (samples,) brought to the training normalization, never above full scale: float32,
        the product of level_scales' two scales in turn."""
        leveled = wave.astype(np.float32)
        for scale in self.level_scales(leveled):
            leveled = leveled * np.float32(scale)
        return leveled

    # ---- sounds in, sounds out ------------------------------------------------------------------------------
    def generate(self, n: int, seconds: float | None = None, temperature: float = 1.0, seed: int = 0,
                 batch_size: int = 8, progress: bool = False, prior: str | Prior | None = None,
                 label: str | Sequence[str] | None = None) -> list[np.ndarray]:
        """n waveforms decoded from prior samples. Sample i uses seed + i, whatever the batch size.

        seconds: duration (default: one training segment). temperature scales the prior's spread; 0 decodes
        its likeliest values. prior: 'learned' (the run's), 'gaussian' (N(0, I)), a Prior, or None (the
        learned one when the run has one). label: a conditional run's label, or labels taken in turn (None: all
        of the run's in turn; labels_in_turn). For long sounds, audiovae.synthesis.generate.generate_files writes
        to files in bounded memory.
        """
        from tqdm import tqdm

        from audiovae.synthesis.generate import choose_prior, latent_chunks

        names = self.labels_in_turn(n, label)
        if names is not None:  # sound i under its label, from seed + i (the run's own prior: under that label too)
            prior = None if prior is self.learned_prior and prior is not None else prior
            return [self.with_label(name).generate(1, seconds, temperature, seed + i, 1, False, prior)[0]
                    for i, name in enumerate(names)]

        chosen = choose_prior(self, prior)
        samples = (self.recipe.data.segment_samples if seconds is None else round(seconds * self.sample_rate))
        if samples < 1:
            raise UserError("--seconds must be positive")
        frames = self.frames_for(samples)
        results: list[np.ndarray] = []
        with tqdm(total=n, unit="sound", desc="generate", disable=not progress) as bar:
            for first in range(0, n, batch_size):
                seeds = [seed + first + i for i in range(min(batch_size, n - first))]
                waves = self._join(self.decode_stream(latent_chunks(self, chosen, frames, temperature, seeds), frames),
                                   samples)
                results.extend(self.at_training_level(w) for w in waves)
                bar.update(len(seeds))
        return results

    def continue_sound(self, wave: np.ndarray, seconds: float, temperature: float = 1.0, seed: int = 0,
                       prior: str | Prior | None = None) -> np.ndarray:
        """The reconstruction of `wave` (whole latent frames of it), then `seconds` of new material from the
        prior continuing it, at the training level."""
        from audiovae.synthesis.generate import choose_prior, encode_prompt, latent_chunks

        prompt = encode_prompt(self, wave, "continue_sound")
        frame = self.frame_samples
        new = round(seconds * self.sample_rate)
        frames = self.frames_for(new)
        chunks = latent_chunks(self, choose_prior(self, prior), frames, temperature, [seed], prompt)
        samples = prompt.shape[-1] * frame + new
        return self.at_training_level(self._join(self.decode_stream(chunks, prompt.shape[-1] + frames), samples)[0])

    def encode(self, wave: np.ndarray) -> Latents:
        """Waveform (samples,) at the model's rate -> posterior means (latent_size, frames)."""
        return self.encode_posterior(wave)[0]

    def encode_posterior(self, wave: np.ndarray) -> tuple[Latents, np.ndarray]:
        """Like encode, and also the KL to the prior per latent value, (latent_size, frames) in nats."""
        self.with_label(None)  # a conditional run needs its label
        gain = self._gain(wave)
        posterior = self._encode_wave(wave, gain)
        frames = self.frames_for(len(wave))
        kl = posterior.kl()[0, :, :frames].cpu().numpy()
        return Latents(posterior.mean[0, :, :frames].cpu().numpy(), len(wave), gain), kl

    def decode(self, latents: Latents | np.ndarray, samples: int | None = None) -> np.ndarray:
        """Latents (latent_size, frames) -> waveform (samples,), peak-safe.

        Latents from `encode` come back at the encoded input's level; bare arrays at the training level.
        """
        self.with_label(None)  # a conditional run needs its label
        gain = latents.gain if isinstance(latents, Latents) else 1.0
        values = latents.values if isinstance(latents, Latents) else np.asarray(latents, np.float32)
        samples = samples or (latents.samples if isinstance(latents, Latents) else values.shape[-1] * self.frame_samples)
        if values.ndim != 2 or values.shape[0] != self.latent_size:
            raise UserError(f"latents of shape {values.shape} do not fit this model ({self.latent_size} x frames)")
        z = torch.from_numpy(np.ascontiguousarray(values, np.float32)).to(self.device)[None]
        return _peak_safe(self.decode_all(z, samples)[0] / gain)

    def reconstruct(self, wave: np.ndarray, label: str | None = None, source_label: str | None = None) -> np.ndarray:
        """Encode and decode a waveform of any length, returned at the input's level. A conditional run's label:
        decode under `label`, encode under `source_label` (default: `label`); a sound of one label encoded under
        its own and decoded under another is label transfer."""
        if label is None and source_label is None:
            return self.decode(self.encode(wave))
        return self.with_label(label or source_label).decode(self.with_label(source_label or label).encode(wave))

    def interpolate(self, a: np.ndarray, b: np.ndarray, steps: int = 8, method: str = "slerp") -> list[np.ndarray]:
        """`steps` waveforms moving from a's latents to b's (cropped to the shorter), 'slerp' or 'linear'."""
        if steps < 2:
            raise UserError("--steps must be at least 2")
        samples = min(len(a), len(b))  # the longer input is cropped first, so both ends are reconstructions
        za, zb = self.encode(a[:samples]), self.encode(b[:samples])
        va, vb = za.values, zb.values
        outputs = []
        for t in np.linspace(0.0, 1.0, steps):
            z = _slerp(va, vb, float(t)) if method == "slerp" else (1 - t) * va + t * vb
            gain = (1 - t) * za.gain + t * zb.gain
            outputs.append(self.decode(Latents(z.astype(np.float32), samples, gain)))
        return outputs

    def load_audio(self, path: str | Path) -> np.ndarray:
        """A file as mono float32 at the model's sample rate (UserError naming the file if unusable)."""
        return load_for_model(path, self.sample_rate)

    def _gain(self, wave: np.ndarray) -> float:
        """The gain the training normalization would apply to this waveform (read blockwise)."""
        data = self.recipe.data
        peak, rms = level_stats(wave)
        return normalization_gain(peak, rms, data.normalization, data.level_db)

    def reconstruct_file(self, source: str | Path, destination: str | Path, block_seconds: float = 30.0,
                         encoder: Model | None = None) -> Path:
        """Reconstruct an audio file of any length into a 16-bit WAV, holding only blocks in memory (encoded by
        `encoder`, default this model: with_label models for label transfer).

        The input is resampled into a temporary memory-mapped file, encoded chunk by chunk, decoded into a
        second one, and written at the input's level (peak-safe), atomically.
        """
        from audiovae.io.audio import write_wav_blocks
        from audiovae.synthesis.longfile import reconstruction_on_disk

        with reconstruction_on_disk(self, source, block_seconds, encoder) as result:
            scale = result.written_scale / result.latents.gain
            write_wav_blocks(destination, result.output, self.sample_rate, scale, block_seconds)
        return Path(destination)


def _peak_safe(wave: np.ndarray) -> np.ndarray:
    scale = peak_safe_scale(float(np.max(np.abs(wave))) if wave.size else 0.0)
    return (wave * scale).astype(np.float32) if scale != 1.0 else wave.astype(np.float32)


def _slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Spherical interpolation of the flattened latent sequences (linear when they are parallel)."""
    fa, fb = a.reshape(-1).astype(np.float64), b.reshape(-1).astype(np.float64)
    cos = np.dot(fa, fb) / max(np.linalg.norm(fa) * np.linalg.norm(fb), 1e-12)
    omega = math.acos(float(np.clip(cos, -1.0, 1.0)))
    if omega < 1e-6:
        return (1 - t) * a + t * b
    return ((math.sin((1 - t) * omega) * fa + math.sin(t * omega) * fb) / math.sin(omega)).reshape(a.shape)


def load(run_or_checkpoint: str | Path | None = None, device: str = "auto", which: str = "best",
         runs_root: str | Path = DEFAULT_RUNS_ROOT, workers: int | None = None) -> Model:
    """Load a trained model: a checkpoint file, a run folder (its best checkpoint), or the newest run.
    workers: CPU threads that synthesize chunks at once (see Model)."""
    path = resolve_checkpoint(run=run_or_checkpoint, root=Path(runs_root), which=which)
    state = load_checkpoint(path)
    try:
        recipe = recipe_from_saved(state["recipe"])
    except ConfigError as error:  # the key path too: "unknown key" alone does not say which
        raise UserError(f"{path}: the checkpoint's recipe is invalid ({error.key}: {error.message}); was it saved by "
                        "another audiovae version?") from None
    except (KeyError, TypeError) as error:
        raise UserError(f"{path}: the checkpoint's recipe is invalid ({error})") from None
    net = build_model(recipe)
    weights = state.get("ema") or state.get("model")
    try:
        net.load_state_dict(weights)
    except (RuntimeError, TypeError, AttributeError) as error:
        first = str(error).strip().splitlines()[0]
        raise UserError(f"{path}: weights do not fit the model its recipe describes ({first[:160]})") from None
    chosen = select_device(device, "--device")
    run = RunFolder.of_checkpoint(path)
    identity = weights_sha256(weights)
    prior, refusal = None, None
    try:
        prior = load_learned_prior(run.prior.checkpoint_to_load("best") if run.holds(path) else None, chosen,
                                   identity, net.latent_size)
    except PriorMismatch as mismatch:  # reconstruct and encode need no prior; generate and export refuse
        refusal = str(mismatch)
    return Model(net, recipe, path, chosen, prior, workers, identity, refusal)

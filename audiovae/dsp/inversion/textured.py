"""Synthesis method `textured`: phases locked to the tonal peaks of the magnitudes, noise-like phases for the
other bins, and a short sweep from the frame's centre for those where an onset begins (issue 30).

`peaks` locks a phase to every local maximum, so every maximum becomes a sinusoid: on music the noise floor
and percussive texture turn into sparse, wobbling partials. Here a peak is tonal when it stands `prominence`
nats above the mean of the log magnitudes around it (1 nat, chosen by oracle in docs/quality.md; white
noise's own maxima pass it in 8% of its bins); the bins of a tonal peak's lobe take its locked phase as in `peaks`, every other bin a
phase drawn afresh each frame (an integer hash, so a sound synthesizes the same each time), its magnitude
scaled by what an overlap-add of independent phases cancels (noise_gain). Where the frame's
log magnitudes rise by more than `onset` nats on average over the previous frame, the bins that are not tonal
take the phases of a sweep instead: each bin delayed to the window's centre plus up to `sweep` hops, lowest
bins first, so that a transient is not smeared over the window; tonal peaks run on through it (restarting
their running phases there as well changed no oracle score, and needs a running maximum that ONNX lacks). A
click at the centre instead (every bin in phase at one sample) put a decaying noise burst back at 1.8 times
its peak and a model's blurred onsets at up to 4 times the input's, so that files were written up to 12 dB
quieter; over an eighth of a hop the peaks stay at the sound's, as little sound comes before the onset, and
no mel distance changed (docs/quality.md). Frame by frame and cheap: a max-pool and a running sum over
bins, one running sum over frames.

The causal form (TexturedAdvance) has no previous frame (a stream's PhaseAdvance sees each frame alone), so it
keeps the tonal split and the noise phases but no onset clicks.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from audiovae.dsp.inversion.base import PhaseAdvance, PhaseRule, SynthesisMethod, locked_phases
from audiovae.dsp.inversion.peaks import edge_padded, peak_frequency

PROMINENCE = 1.0  # nats (8.7 dB) a tonal peak stands above the mean log magnitude of its surroundings
SURROUNDINGS = 8  # bins either side of a peak that make its surroundings
ONSET = 0.5  # nats (4.3 dB): the mean rise of the log magnitudes over the previous frame that marks an onset
SWEEP = 0.125  # hops over which an onset's bins arrive after the window's centre, lowest first (0: a click there)
CLOCK = 4096  # frames before the noise phases repeat (24 s at hop 256 and 44.1 kHz)
MODULUS = 1048573  # a prime: integers are reduced below it before they are scrambled, so int64 never overflows


def hashed_phase(a: torch.Tensor, b: torch.Tensor, modulus: int = MODULUS) -> torch.Tensor:
    """Phases in [0, 2 pi) scrambled from two integer tensors (broadcast together): the same pair, the same
    phase, on any device and at any chunking; neighbouring pairs uncorrelated."""
    x = torch.remainder(a * 73856093 + b * 19349663, modulus)
    x = torch.remainder(x * x + x * 12345 + 6789, modulus)  # a square to scramble (no xor: ONNX has none)
    x = torch.remainder(x * 2654435761, 4294967296)
    return x.float() * (2 * math.pi / 4294967296)


@functools.cache
def _noise_table(frames: int, bins: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A (frames, bins) table of noise phases on `device`, and which of its rows are filled."""
    return torch.empty(frames, bins, device=device), torch.zeros(frames, dtype=torch.bool, device=device)


@torch.jit.unused
def tabled_noise_phase(frame: torch.Tensor, bins: int, clock: int = CLOCK) -> torch.Tensor:
    """hashed_phase(arange(bins), frame[:, None]) for frame (frames,) long in [0, clock): (frames, bins), the same
    numbers, read from a table kept per clock, bin count and device whose rows are hashed the first time a sound needs
    them. The hash's integer remainders took 12 ms of a 10-s sound's 60 at 44.1 kHz on 2 cores; a row gather
    takes well under one (docs/benchmarks.md). Eager Python only: the export's scripted and traced graphs hash."""
    table, filled = _noise_table(clock, bins, frame.device)
    missing = frame[~filled[frame]]
    if len(missing):
        table[missing] = hashed_phase(torch.arange(bins, device=frame.device)[None], missing[:, None])
        filled[missing] = True
    return table[frame]


def tonal_owners(x: torch.Tensor, prominence: float = PROMINENCE, surroundings: int = SURROUNDINGS
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Log magnitudes x (batch, frames, bins) -> each bin's peak frequency in bins and owner (peak_frequency),
    and whether that peak is tonal (bool): its log magnitude `prominence` nats above the mean over
    `surroundings` bins either side of it (edges repeated)."""
    frequency, owner = peak_frequency(x)
    batch, frames, bins = x.shape[0], x.shape[1], x.shape[2]
    # the mean over 2 s + 1 bins as a difference of running sums of the frame's deviations from its mean (small
    # sums: within 1e-5 of an average pool's means), in a quarter of an average pool's time at 513 bins
    centre = x.mean(-1, keepdim=True)
    flat = edge_padded(x - centre, surroundings)
    running = F.pad(torch.cumsum(flat, -1), (1, 0))
    width = 2 * surroundings + 1
    around = ((running[..., width:] - running[..., :-width]) / width).reshape(batch, frames, bins) + centre
    tonal = torch.gather(x - around, -1, owner) > prominence
    return frequency, owner, tonal


def noise_gain(n_fft: int, hop_length: int) -> float:
    """The amplitude that bins with phases independent from frame to frame lose in a Hann overlap-add that
    divides by the windows' squares (n_fft / hop_length of them over a sample), restored: sqrt(n_fft / hop).
    Such a frame spreads its energy over the whole window, the synthesis window keeps 3/8 of it, the frames add
    in power, not in amplitude, and the division by their summed squares (3 n_fft / (8 hop)) takes the rest."""
    return math.sqrt(n_fft / hop_length)


def textured_phase(log_magnitude: torch.Tensor, n_fft: int, hop_length: int, first_frame: int = 0,
                   prominence: float = PROMINENCE, onset: float = ONSET, clock: int = CLOCK,
                   sweep: float = SWEEP) -> tuple[torch.Tensor, torch.Tensor]:
    """Phases (..., bins, frames) for log magnitudes (..., bins, frames), frames first_frame, first_frame + 1, ...
    of a sound (module docstring), and which bins took noise phases (1.0, the others 0.0; same shape). Bins of
    tonal lobes: as peak_locked_phase; other bins: hashed_phase(bin, frame + 1 modulo CLOCK), the phases the
    causal form gives them, or in an onset frame the sweep's: pi per bin (a click at the centre of the window,
    which starts at its edge) less a phase growing with the bin's square, which delays bin k by sweep * hop * k /
    (bins - 1) samples more. A sound's first frame is an onset; a chunk's (first_frame > 0) only if it rises.
    Scriptable and exportable to ONNX."""
    bins, frames = log_magnitude.shape[-2], log_magnitude.shape[-1]
    # (batch, frames, bins), a frame's bins side by side: every step below runs along them (a copy only where the
    # caller's memory holds a bin's frames together instead; griffin_lim_from_log_magnitude's does not)
    x = log_magnitude.reshape(-1, bins, frames).transpose(1, 2).contiguous()
    frequency, owner, tonal = tonal_owners(x, prominence)
    rise = torch.relu(x[:, 1:] - x[:, :-1]).mean(-1)  # (batch, frames - 1)
    first = torch.full_like(rise[:, :1], 1.0 if first_frame == 0 else 0.0)  # a sound starts with an onset
    onsets = torch.cat([first, (rise > onset).to(x.dtype)], 1) > 0  # (batch, frames)
    index = torch.arange(frames, device=x.device)
    step = torch.remainder(frequency * hop_length, n_fft) * (2 * math.pi / n_fft)
    integrated = torch.cumsum(step, 1) - step[:, :1]
    bin_index = torch.arange(bins, device=x.device)
    away = bin_index[None, None] - owner
    locked = torch.gather(integrated, -1, owner) - math.pi * away.to(x.dtype)
    frame = torch.remainder(index + first_frame + 1, clock)  # frame t as TexturedAdvance's clock counts it
    if torch.jit.is_scripting() or torch.jit.is_tracing():
        noise = hashed_phase(bin_index[None, None], frame[None, :, None]).to(x.dtype)
    else:
        noise = tabled_noise_phase(frame, bins, clock)[None].to(x.dtype)
    k = bin_index.to(x.dtype)
    click = (math.pi * k - (2 * math.pi * sweep * hop_length / (n_fft * max(bins - 1, 1))) * k * k)[None, None]
    # selections as products of 0/1 masks (exact for these finite phases; torch.where takes 30 times as long)
    is_tonal, is_onset = tonal.to(x.dtype), onsets[..., None].to(x.dtype)
    not_tonal, not_onset = 1.0 - is_tonal, 1.0 - is_onset
    untouched = not_onset * noise + is_onset * click  # (batch, frames, bins): noise, or the onset's sweep
    phase = is_tonal * locked + not_tonal * untouched
    noisy = not_tonal * not_onset
    return phase.transpose(1, 2).reshape(log_magnitude.shape), noisy.transpose(1, 2).reshape(log_magnitude.shape)


class TexturedPhases(PhaseRule):
    """textured_phase of the magnitudes' logs, frames counted from `first_frame` (a chunk's noise phases are the
    whole's; its tonal phases integrate from its own first frame, as PeakLockedPhases'). Its start scales the
    bins with noise phases by exp(noise_level) and, at the start only, by noise_gain."""

    def forward(self, magnitude: torch.Tensor, first_frame: int) -> torch.Tensor:
        return textured_phase(torch.log(magnitude.clamp_min(1e-12)), self.n_fft, self.hop_length, first_frame)[0]

    def start(self, magnitude: torch.Tensor, first_frame: int
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        phase, noisy = textured_phase(torch.log(magnitude.clamp_min(1e-12)), self.n_fft, self.hop_length,
                                      first_frame)
        level, other = math.exp(self.noise_level), 1.0 - noisy  # scales as products of the 0/1 mask: exact
        return (phase, magnitude * (noisy * (level * noise_gain(self.n_fft, self.hop_length)) + other),
                magnitude * (noisy * level + other))


class TexturedAdvance(PhaseAdvance):
    """The causal form, frame by frame: bins of tonal lobes advance by their peak's frequency and lock to it, as
    PeakAdvance; the others take hashed_phase(bin, frame) scaled by noise_gain and exp(noise_level), while their running phases
    advance at their centre frequencies (where a peak takes them over, it starts from there). No onset clicks
    (they need the previous frame).

    The frame comes from a clock: the top (Nyquist) bin's running phase advances by 2 pi / CLOCK a frame and
    rounds back to a frame count modulo CLOCK. A stream's state is its running phases alone, and a hash of the
    magnitudes would flip wherever a stream's rounding differs from the offline pass's (and repeat wherever a
    model holds a frame): the clock keeps the stream equal to its offline pass, and a float32 state rounds by
    2 pi * 2**-24 a block against a step of 2 pi / 4096."""

    def __init__(self, n_fft: int, hop_length: int, noise_level: float = 0.0):
        super().__init__(n_fft, hop_length, noise_level)
        self.clock = CLOCK

    def advance(self, log_magnitude: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(step, owner, tonal), each (batch, bins, frames); the top bin is the clock (tonal, its own owner)."""
        x = log_magnitude.transpose(1, 2)  # (batch, frames, bins)
        frequency, owner, tonal = tonal_owners(x)
        bins = x.shape[-1]
        bin_index = torch.arange(bins, device=x.device)
        own = bin_index[None, None].expand_as(owner)
        clock = own == bins - 1
        centre = torch.remainder(own * self.hop_length, self.n_fft).to(x.dtype) * (2 * math.pi / self.n_fft)
        step = torch.remainder(frequency * self.hop_length, self.n_fft) * (2 * math.pi / self.n_fft)
        step = torch.where(clock, torch.full_like(step, 2 * math.pi / self.clock), torch.where(tonal, step, centre))
        owner = torch.where(tonal & ~clock, owner, own)
        return step.transpose(1, 2), owner.transpose(1, 2), (tonal | clock).transpose(1, 2)

    def forward(self, log_magnitude: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        step, owner, _ = self.advance(log_magnitude)
        return step, owner

    def running(self, log_magnitude: torch.Tensor, start: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        step, owner, tonal = self.advance(log_magnitude)
        phase, end = locked_phases(step, owner, start)
        frame = torch.remainder(torch.round(phase[:, -1:].double() * (self.clock / (2 * math.pi))).long(), self.clock)
        bin_index = torch.arange(phase.shape[1], device=phase.device)[None, :, None]
        phase = torch.where(tonal, phase, hashed_phase(bin_index, frame).to(phase.dtype))
        magnitude = torch.exp(log_magnitude)
        gain = noise_gain(self.n_fft, self.hop_length) * math.exp(self.noise_level)
        return phase, torch.where(tonal, magnitude, magnitude * gain), end


METHOD = SynthesisMethod("textured", TexturedPhases, iterations=0,
                         summary="phases locked to tonal peaks, noise-like elsewhere, a short sweep at onsets",
                         advance=TexturedAdvance, noise=True)

"""The learned prior's sampling loop without Python between frames: TorchScript functions that run a chunk of
frames through the core, the mixture head and the draw, with the random numbers drawn before the loop.

Each frame computes what a step of the Python loop it replaces computed, by the same kernels in the same
order (the GRU as torch.gru_cell per layer, what nn.GRU runs for one step), so the frames are the same bits
(tests/priors/test_sampler.py); what goes is the interpreter's time between the operations: half of the
prior's time, which is most of generate's (docs/benchmarks.md). The random numbers are drawn in the order the
frames drew them: per frame one uniform (the component) and then `latent` normals, row after row when each
row has its own generator. What is left per frame is mostly the GRU's matrix-vector products.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch

from audiovae.nn.legacy_export import legacy_export
from audiovae.priors.cores import ConvCore, GRUCore


def split_mixture(out: torch.Tensor, mixtures: int, latent_size: int,
                  min_log_scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The head's output (..., K + 2 K D) -> logits (..., K), means and log scales (..., K, D), the log scales
    floored at min_log_scale. Scriptable (audiovae.priors.host_face)."""
    k, d = mixtures, latent_size
    logits, means, log_scales = out.split([k, k * d, k * d], dim=-1)
    shape = list(out.shape[:-1]) + [k, d]
    return logits, means.reshape(shape), log_scales.reshape(shape).clamp_min(min_log_scale)


def draw_mixture(out: torch.Tensor, uniform: torch.Tensor, normal: torch.Tensor, rows: torch.Tensor,
                 temperature: float, mixtures: int, min_log_scale: float) -> torch.Tensor:
    """One frame (B, latent), normalized, from the head's output (B, K + 2 K D): the component whose cumulative
    weight first reaches `uniform` (B,), then its mean plus temperature * its std * `normal` (B, latent);
    temperature 0 takes the likeliest component's mean. rows: arange(B). Scriptable.

    The numbers of split_mixture and then a pick, with fewer operations: only the picked log scales are floored,
    and temperature 1 neither divides nor multiplies (both exact there)."""
    k, d = mixtures, normal.shape[-1]
    logits = out[:, :k]
    means = out[:, k : k + k * d].reshape(-1, k, d)
    if temperature == 0:
        return means[rows, logits.argmax(-1)]
    weights = torch.softmax(logits if temperature == 1 else logits / temperature, -1)
    pick = torch.searchsorted(weights.cumsum(-1), uniform[:, None]).clamp_max(k - 1)[:, 0]
    scale = out[:, k + k * d :].reshape(-1, k, d)[rows, pick].clamp_min(min_log_scale).exp()
    return means[rows, pick] + (scale if temperature == 1 else temperature * scale) * normal


def gru_frames(previous: torch.Tensor, hidden: torch.Tensor, input_weight: torch.Tensor, input_bias: torch.Tensor,
               layers: list[list[torch.Tensor]], head_weight: torch.Tensor, head_bias: torch.Tensor,
               uniforms: torch.Tensor, normals: torch.Tensor, temperature: float, mixtures: int,
               min_log_scale: float, label_offset: torch.Tensor | None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A GRUCore's frames: previous (B, latent) normalized, hidden (layers, B, H), layers [w_ih, w_hh, b_ih, b_hh]
    each, uniforms (T, B), normals (T, B, latent) -> frames (T, B, latent) normalized, the last frame, hidden.
    label_offset (B, latent): added to every input frame (a conditional prior's label embedding), or None."""
    frames = torch.empty(normals.shape, device=previous.device)
    rows = torch.arange(normals.shape[1], device=previous.device)
    states = list(hidden.unbind(0))
    for t in range(normals.shape[0]):
        x = torch.nn.functional.linear(previous if label_offset is None else previous + label_offset, input_weight,
                                       input_bias)
        for i, weights in enumerate(layers):
            x = torch.gru_cell(x, states[i], weights[0], weights[1], weights[2], weights[3])
            states[i] = x
        out = torch.nn.functional.linear(x, head_weight, head_bias)
        previous = draw_mixture(out, uniforms[t], normals[t], rows, temperature, mixtures, min_log_scale)
        frames[t] = previous
    return frames, previous, torch.stack(states)


def conv_frames(previous: torch.Tensor, caches: list[torch.Tensor], input_weight: torch.Tensor,
                input_bias: torch.Tensor, layers: list[list[torch.Tensor]], dilations: list[int],
                head_weight: torch.Tensor, head_bias: torch.Tensor, uniforms: torch.Tensor, normals: torch.Tensor,
                temperature: float, mixtures: int, min_log_scale: float, label_offset: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """A ConvCore's frames (ConvCore.step and GatedFrameStep, inlined): layers [gate w, gate b, residual w,
    residual b, skip w, skip b] each with the weights flattened to matrices, caches (B, C, context) per layer
    -> frames (T, B, latent) normalized, the last frame, the next caches."""
    frames = torch.empty(normals.shape, device=previous.device)
    rows = torch.arange(normals.shape[1], device=previous.device)
    for t in range(normals.shape[0]):
        x = torch.nn.functional.linear(previous if label_offset is None else previous + label_offset, input_weight,
                                       input_bias)
        skip = torch.zeros_like(x)
        for i, weights in enumerate(layers):
            window = torch.cat([caches[i], x[..., None]], -1)  # (B, C, context + 1)
            taps = window[..., :: dilations[i]].flatten(1)  # (B, C * kernel)
            a, b = torch.nn.functional.linear(taps, weights[0], weights[1]).chunk(2, dim=1)
            h = torch.tanh(a) * torch.sigmoid(b)
            x = x + torch.nn.functional.linear(h, weights[2], weights[3])
            skip = skip + torch.nn.functional.linear(h, weights[4], weights[5])
            caches[i] = window[..., 1:]
        out = torch.nn.functional.linear(torch.relu(skip), head_weight, head_bias)
        previous = draw_mixture(out, uniforms[t], normals[t], rows, temperature, mixtures, min_log_scale)
        frames[t] = previous
    return frames, previous, caches


def generator_draws(generators: list[torch.Generator], frames: int, latent_size: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Row i's random numbers from generators[i]: uniforms (frames, B), normals (frames, B, latent_size), frame
    after frame one uniform and then the normals of each row in turn."""
    uniforms = torch.empty([frames, len(generators)])
    normals = torch.empty([frames, len(generators), latent_size])
    for t in range(frames):
        for i, generator in enumerate(generators):
            torch.rand([1], generator=generator, out=uniforms[t, i : i + 1])
            torch.randn([1, latent_size], generator=generator, out=normals[t, i : i + 1])
    return uniforms, normals


def scripted(function):
    """`function` compiled by TorchScript once per process (its deprecation warning silenced: the export relies on
    TorchScript too, audiovae.realtime.export), run by the plain graph executor: the profiling one runs the first
    two calls slower while it profiles (328 against 162 ms of CPU for a sound's first 625 frames) and fuses
    nothing on a CPU, so it gains nothing after them either (164 against 148 ms)."""
    compiled = compile_once(function)

    def run(*args):
        with torch.jit.optimized_execution(False):
            return compiled(*args)

    return run


@functools.cache
def compile_once(function):
    with legacy_export(notes=True):  # torch.jit.script's deprecation notice alone, not every warning
        return torch.jit.script(function)


def draws(generator: torch.Generator | Sequence[torch.Generator] | None, batch: int, frames: int,
          latent_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The random numbers of `frames` frames, on the CPU: uniforms (frames, batch), normals (frames, batch,
    latent_size), from one generator for the batch (or torch's default) or one per row."""
    if isinstance(generator, torch.Generator | None):
        uniforms = torch.empty(frames, batch)
        normals = torch.empty(frames, batch, latent_size)
        for t in range(frames):
            torch.rand(batch, generator=generator, out=uniforms[t])
            torch.randn(batch, latent_size, generator=generator, out=normals[t])
        return uniforms, normals
    return scripted(generator_draws)(list(generator), frames, latent_size)


def sample_frames(core: torch.nn.Module, head: torch.nn.Linear, previous: torch.Tensor, state, uniforms: torch.Tensor,
                  normals: torch.Tensor, temperature: float, mixtures: int, min_log_scale: float,
                  label_offset: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, object]:
    """A core's frames for the random numbers given (uniforms (T, B), normals (T, B, latent) on the core's device),
    continuing from `previous` (B, latent) and the core's stream state: frames (B, latent, T) normalized, the last
    frame and the next state. label_offset (B, latent): added to every input frame (a conditional prior's label
    embedding; None: unconditional, the same operations as before conditioning existed)."""
    if isinstance(core, GRUCore):
        gru = core.gru
        layers = [[getattr(gru, f"{name}_l{i}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
                  for i in range(gru.num_layers)]
        frames, previous, state = scripted(gru_frames)(
            previous, state, core.input.weight, core.input.bias, layers, head.weight, head.bias, uniforms, normals,
            temperature, mixtures, min_log_scale, label_offset)
    elif isinstance(core, ConvCore):
        layers = [[gate.weight.flatten(1), gate.bias, residual.weight.flatten(1), residual.bias, skip.weight.flatten(1),
                   skip.bias] for gate, residual, skip in zip(core.gates, core.residuals, core.skips, strict=True)]
        frames, previous, state = scripted(conv_frames)(
            previous, state, core.input.weight.flatten(1), core.input.bias, layers, list(core.dilations),
            head.weight, head.bias, uniforms, normals, temperature, mixtures, min_log_scale, label_offset)
    else:
        raise TypeError(f"no scripted sampling loop for {type(core).__name__}")
    return frames.permute(1, 2, 0), previous, state

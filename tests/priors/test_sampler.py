"""The scripted sampling loop (audiovae.priors.sampler) draws the same bits as the Python loop it replaced: the
core's `step`, the mixture head and the pick, frame after frame, with each frame's random numbers drawn in turn."""

from __future__ import annotations

import pytest
import torch
from conftest import PRIOR_LATENT as LATENT
from conftest import TINY_PRIORS as TINY
from conftest import synthetic_latents

from audiovae.priors.learned import LatentPrior, build_prior

pytestmark = pytest.mark.usefixtures("one_thread_each_test")


def python_loop(prior: LatentPrior, batch: int, frames: int, temperature: float, generator) -> torch.Tensor:
    """The loop before the scripted one (audiovae 0.3's LatentPrior._sample_chunk and _draw), in the VAE's units."""
    state = prior.initial_state(batch)
    chunk = torch.empty(batch, prior.latent_size, frames)
    rows = torch.arange(batch)
    for t in range(frames):
        features, state.core = prior.core.step(state.previous, state.core)
        logits, means, log_scales = prior.mixture(features)
        if isinstance(generator, torch.Generator | None):
            uniform, normal = torch.rand(batch, generator=generator), torch.randn(batch, prior.latent_size,
                                                                                   generator=generator)
        else:
            draws = [(torch.rand(1, generator=g), torch.randn(1, prior.latent_size, generator=g)) for g in generator]
            uniform, normal = torch.cat([u for u, _ in draws]), torch.cat([n for _, n in draws])
        if temperature == 0:
            frame = means[rows, logits.argmax(-1)]
        else:
            cumulative = torch.softmax(logits / temperature, -1).cumsum(-1)
            pick = torch.searchsorted(cumulative, uniform[:, None]).clamp_max(prior.config.mixtures - 1)[:, 0]
            frame = means[rows, pick] + temperature * log_scales[rows, pick].exp() * normal
        state.previous = frame
        chunk[..., t] = frame
    return chunk * prior.latent_std[:, None] + prior.latent_mean[:, None]


@pytest.mark.parametrize("kind", ["gru", "conv"])  # the scripted loops of the autoregressive priors
@pytest.mark.parametrize("temperature", [0.0, 0.6, 1.0, 1.7])
@pytest.mark.parametrize("per_row", [False, True])
def test_the_scripted_loop_samples_the_same_bits_as_the_python_loop(kind, temperature, per_row):
    prior = build_prior(TINY[kind], LATENT, [synthetic_latents(300, 0)]).eval()
    with torch.no_grad():  # a spread-out head, so that every component gets picked
        prior.head.bias.add_(torch.linspace(-1.0, 1.0, prior.head.bias.numel()))
    batch, frames = 3, 45

    def generator():
        return [torch.Generator().manual_seed(7 + i) for i in range(batch)] if per_row else torch.Generator().manual_seed(7)

    with torch.no_grad():
        expected = python_loop(prior, batch, frames, temperature, generator())
    chunks = list(prior.sample_stream(batch, frames, temperature, generator(), chunk_frames=16))
    assert [c.shape[-1] for c in chunks] == [16, 16, 13]
    assert torch.equal(torch.cat(chunks, -1), expected)
    assert expected.std() > 0.1  # frames that differ, not one repeated

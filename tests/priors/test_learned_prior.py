"""The learned latent prior: it learns, streams in bounded memory, and chunking, priming and checkpoints
never change what it samples."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import PRIOR_LATENT as LATENT
from conftest import TINY_PRIORS as TINY
from conftest import synthetic_latents

from audiovae.config.schema import ConfigError
from audiovae.evaluation.metrics import windows_in_range
from audiovae.priors.learned import (
    LearnedPrior,
    PriorConfig,
    build_prior,
    checkpoint_state,
    prior_from_checkpoint,
)
from audiovae.training.prior_stage import fit_prior

pytestmark = pytest.mark.usefixtures("one_thread_each_test")


@pytest.fixture(scope="module")
def trained() -> tuple[object, list[np.ndarray]]:
    """A tiny GRU prior fit in a few seconds on synthetic latents."""
    train = [synthetic_latents(3000, seed) for seed in range(2)]
    config = dataclasses.replace(TINY["gru"], hidden_size=32, batch_size=16, sequence_frames=64, max_steps=250,
                                 max_minutes=None, valid_every=50, learning_rate=3e-3, input_noise=0.1)
    return fit_prior(config, train, [synthetic_latents(1000, 9)]).prior, train


def gaussian_nll(z: np.ndarray) -> float:
    """N(0, I)'s NLL in nats per frame of z (latent, frames)."""
    return float(0.5 * (np.square(z).sum(0) + z.shape[0] * np.log(2 * np.pi)).mean())


def test_trained_prior_beats_gaussian_nll(trained):
    prior, train = trained
    for z in (train[0], synthetic_latents(1000, 7)):  # its training data and a held-out sequence
        nll = prior.nll(torch.from_numpy(z)[None])
        assert nll < gaussian_nll(z) - 5.0, (nll, gaussian_nll(z))


@pytest.mark.parametrize("kind", ["gru", "conv"])  # the flow's: tests/priors/test_flow_prior.py
def test_streaming_equals_offline_pass(kind):
    """The log-likelihood that frame-by-frame streaming state implies equals the offline (training) pass."""
    prior = build_prior(TINY[kind], LATENT, [synthetic_latents(500, 0)]).eval()
    z = torch.from_numpy(synthetic_latents(40, 1))[None]
    offline = prior.log_prob(z)[0]
    x = prior.normalize(z)  # (1, latent, frames)
    state = prior.initial_state(1)
    for t in range(z.shape[-1]):
        features, state.core = prior.core.step(state.previous, state.core)
        logits, means, log_scales = prior.mixture(features)
        component = (-0.5 * ((x[:, None, :, t] - means) * torch.exp(-log_scales)).square() - log_scales
                     - 0.5 * np.log(2 * np.pi)).sum(-1)
        streamed = torch.logsumexp(torch.log_softmax(logits, -1) + component, -1) - prior.latent_std.log().sum()
        assert torch.allclose(streamed, offline[t:t + 1], atol=1e-4), t
        state.previous = x[..., t]


@pytest.mark.parametrize("kind", list(TINY))
def test_chunk_size_does_not_change_samples(kind):
    prior = build_prior(TINY[kind], LATENT)
    runs = []
    for chunk in (1, 7, 50, 64):
        chunks = list(prior.sample_stream(2, 50, 0.9, torch.Generator().manual_seed(3), chunk_frames=chunk))
        assert all(c.shape[:2] == (2, LATENT) and c.shape[-1] <= chunk for c in chunks)
        runs.append(torch.cat(chunks, -1))
    assert runs[0].shape == (2, LATENT, 50)
    for other in runs[1:]:
        assert torch.equal(runs[0], other)


def test_batch_size_does_not_change_a_row_with_its_own_generator():
    prior = build_prior(TINY["gru"], LATENT)
    batch = LearnedPrior(prior).sample((3, LATENT, 30), 1.0, [torch.Generator().manual_seed(10 + i) for i in range(3)])
    alone = LearnedPrior(prior).sample((1, LATENT, 30), 1.0, [torch.Generator().manual_seed(12)])
    assert torch.allclose(batch[2:], alone, atol=1e-6)
    assert not torch.allclose(batch[0], batch[1])


@pytest.mark.parametrize("kind", list(TINY))
def test_prime_then_sample_continues_deterministically(kind):
    prior = build_prior(TINY[kind], LATENT, [synthetic_latents(500, 0)])
    prompt = torch.from_numpy(synthetic_latents(30, 2))[None]

    def continuation(prompt: torch.Tensor, seed: int = 5) -> torch.Tensor:
        state = prior.prime(prompt)
        return torch.cat(list(prior.sample_stream(1, 20, 0.8, torch.Generator().manual_seed(seed), 8, state)), -1)

    first = continuation(prompt)
    assert torch.equal(first, continuation(prompt))
    assert not torch.allclose(first, continuation(prompt * 0.0 + prompt[..., :1]))  # the prompt matters
    # priming in two pieces is priming once
    state = prior.prime(prompt[..., 17:], prior.prime(prompt[..., :17]))
    again = torch.cat(list(prior.sample_stream(1, 20, 0.8, torch.Generator().manual_seed(5), 8, state)), -1)
    assert torch.equal(first, again)


@pytest.mark.parametrize("kind", list(TINY))
def test_checkpoint_round_trip_reproduces_samples(kind, tmp_path):
    prior = build_prior(TINY[kind], LATENT, [synthetic_latents(500, 0)])
    path = tmp_path / "prior.pt"
    torch.save(checkpoint_state(prior), path)
    loaded = prior_from_checkpoint(torch.load(path, weights_only=True))
    assert torch.equal(loaded.latent_std, prior.latent_std)
    for temperature in (0.0, 0.7, 1.0):
        expected = LearnedPrior(prior).sample((2, LATENT, 25), temperature, torch.Generator().manual_seed(1))
        actual = LearnedPrior(loaded).sample((2, LATENT, 25), temperature, torch.Generator().manual_seed(1))
        assert torch.equal(expected, actual)


@pytest.mark.parametrize(("kind", "minutes"), [("conv", 10), ("gru", 1)])
def test_long_streams_hold_bounded_memory(kind, minutes):
    """Sampling 10 min (62.5 frames/s) holds one chunk and a fixed-size state, whatever has been generated.

    The conv core's per-layer caches are where growth could creep in, so it streams the full 10 min; the
    GRU's state is one fixed tensor, and 1 min keeps the test fast."""
    config = dataclasses.replace(TINY[kind], hidden_size=8, layers=2 if kind == "gru" else 3, mixtures=2)
    prior = build_prior(config, LATENT)
    frames, chunk = int(minutes * 60 * 62.5), 500
    state = prior.initial_state(1)
    stream = prior.sample_stream(1, frames, 1.0, torch.Generator().manual_seed(0), chunk, state)

    def held() -> int:
        """Numbers the state and the generator's own variables hold."""
        core = state.core if isinstance(state.core, list) else [state.core]
        total = sum(t.numel() for t in core) + state.previous.numel()
        for value in stream.gi_frame.f_locals.values():
            if isinstance(value, torch.Tensor):
                total += value.numel()
            assert not isinstance(value, list | dict), "the stream keeps a growing container"
        return total

    seen, sizes = 0, []
    for piece in stream:
        assert piece.shape[-1] <= chunk
        seen += piece.shape[-1]
        if seen in (chunk, frames // 2 // chunk * chunk, frames - frames % chunk):
            sizes.append(held())
    assert seen == frames
    assert len(sizes) == 3 and max(sizes) == min(sizes) and max(sizes) < 4 * chunk * LATENT


def test_sixty_second_samples_stay_alive(trained):
    """Every 5-s window of 60-s samples keeps the training windows' per-dim mean and spread: no collapse to a
    constant, no explosion."""
    prior, train = trained
    window = round(5 * 62.5)
    reference = np.concatenate(train, axis=1)
    z = LearnedPrior(prior).sample((2, LATENT, round(60 * 62.5)), 1.0, torch.Generator().manual_seed(0)).numpy()
    assert np.isfinite(z).all()
    for row in z:
        assert windows_in_range(row, reference, window) == 1.0
    # the check has teeth: a collapsed and an exploding sequence fail it
    assert windows_in_range(np.repeat(reference[:, :1], len(z[0, 0]), 1), reference, window) == 0.0
    assert windows_in_range(reference * 3.0, reference, window) == 0.0
    assert windows_in_range(reference, reference, window) == 1.0


@pytest.mark.parametrize(("key", "value"), [("kind", "lstm"), ("hidden_size", 0), ("mixtures", 0),
                                             ("input_noise", -0.1), ("kernel_size", 1), ("dropout", 1.0),
                                             ("sequence_frames", 1), ("max_minutes", 0.0)])
def test_config_names_the_broken_key(key, value):
    with pytest.raises(ConfigError) as error:
        PriorConfig(**{key: value})
    assert error.value.key == key


def test_a_prior_file_whose_weights_are_not_a_mapping_is_one_line(tmp_path):
    """A checkpoint in audiovae's format whose weights entry is something else (a foreign or damaged file) is refused
    in one line naming the file, not an AttributeError from reading it."""
    from audiovae.errors import UserError
    from audiovae.io.checkpoint import save_checkpoint
    from audiovae.priors.learned import load_learned_prior

    path = save_checkpoint(tmp_path / "prior.pt", {"prior_config": dataclasses.asdict(TINY["gru"]),
                                                   "latent_size": LATENT, "prior": [1, 2]})
    with pytest.raises(UserError, match=r"prior.pt: not a learned prior of this run \('list' object has no attribute"):
        load_learned_prior(path, torch.device("cpu"))

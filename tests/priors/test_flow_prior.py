"""The flow prior (prior.kind flow): its likelihood is the change of variables, its samples are the inverse of the
map that scores them, its continuations condition on the prompt exactly, and it learns speech-like latents.
(Chunking, priming in pieces and checkpoints: the parametrized tests in test_learned_prior.py.)"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from conftest import PRIOR_LATENT as LATENT
from conftest import TINY_PRIORS, synthetic_latents

from audiovae.config.schema import ConfigError
from audiovae.errors import UserError
from audiovae.evaluation.metrics import windows_in_range
from audiovae.priors.learned import LearnedPrior, PriorConfig, build_prior
from audiovae.training.prior_stage import fit_prior

pytestmark = pytest.mark.usefixtures("one_thread_each_test")
TINY = TINY_PRIORS["flow"]  # 4 frames a position, 3 couplings


def untrained(latent: int = LATENT, config: PriorConfig = TINY, seed: int = 0) -> torch.nn.Module:
    """A flow whose couplings do something: the near-zero output convs scaled up, as training does."""
    torch.manual_seed(seed)
    prior = build_prior(config, latent, [synthetic_latents(300, 0)[:latent]])
    with torch.no_grad():
        for coupling in prior.couplings:
            coupling.conditioner.output.weight.normal_(0, 0.3)
            coupling.log_scale.normal_(0, 0.1)
            coupling.bias.normal_(0, 0.1)
    return prior.eval()


@pytest.mark.parametrize("mixtures", [1, 3])
def test_log_likelihood_is_the_change_of_variables(mixtures):
    """log p(z) = log p_base(f(x)) + log|det df/dx| - sum(log std) per frame, with the Jacobian taken by autograd."""
    config = dataclasses.replace(TINY, group_frames=2, couplings=2, mixtures=mixtures)
    prior = untrained(2, config).double()
    z = torch.from_numpy(synthetic_latents(6, 3)[:2]).double()[None]  # (1, 2, 6)

    def noise(flat: torch.Tensor) -> torch.Tensor:
        y, _ = prior.to_noise(flat.reshape(1, 2, 6), prior.initial_state(1))
        return y.reshape(-1)

    x = prior.normalize(z)
    jacobian = torch.autograd.functional.jacobian(noise, x.reshape(-1))
    y = noise(x.reshape(-1))
    if mixtures == 1:
        base = (-0.5 * y.square() - 0.5 * math.log(2 * math.pi)).sum()
    else:
        base = sum(torch.logsumexp(torch.log_softmax(prior.base.logits, -1) + torch.distributions.Normal(
            prior.base.means, prior.base.log_scales.exp()).log_prob(position).sum(-1), -1) for position in y.view(3, 4))
    expected = base + torch.linalg.slogdet(jacobian)[1] - 6 * prior.latent_std.log().sum()
    got = prior.log_prob(z)[0]
    assert got.shape == (6,)
    torch.testing.assert_close(got.sum(), expected, rtol=1e-9, atol=1e-9)
    assert abs(prior.nll(z) + expected.item() / 6) < 1e-9


def test_a_continuation_is_the_inverse_of_its_noise_given_the_prompt():
    """Sampling after a prompt inverts the causal map: the prompt and its continuation, scored whole from the start,
    give back the continuation's noise exactly where the continuation lies, and the prompt changes the frames."""
    prior = untrained()
    prompt = torch.from_numpy(synthetic_latents(12, 1))[None]  # 3 whole positions
    state = prior.prime(prompt)
    new = torch.cat(list(prior.sample_stream(1, 20, 0.7, torch.Generator().manual_seed(4), 256, state)), -1)
    y, _ = prior.to_noise(prior.normalize(torch.cat([prompt, new], -1)), prior.initial_state(1))
    drawn = torch.randn(prior.draw_positions, 1, LATENT * 4, generator=torch.Generator().manual_seed(4)) * 0.7
    torch.testing.assert_close(y[:, 3:], drawn[:5].transpose(0, 1), atol=1e-5, rtol=1e-4)
    other = prior.prime(prompt.flip(-1))
    elsewhere = torch.cat(list(prior.sample_stream(1, 20, 0.7, torch.Generator().manual_seed(4), 256, other)), -1)
    assert (elsewhere - new).abs().max() > 1e-3


def test_a_prompt_ending_inside_a_position_keeps_its_frames_and_continues():
    prior = untrained()
    prompt = torch.from_numpy(synthetic_latents(14, 1))[None]  # 3 positions and 2 frames
    state = prior.prime(prompt)
    assert state.pending.shape == (1, LATENT, 2)
    new = torch.cat(list(prior.sample_stream(1, 10, 1.0, torch.Generator().manual_seed(0), 3, state)), -1)
    assert new.shape == (1, LATENT, 10) and torch.isfinite(new).all()
    assert state.pending.shape[-1] == 0
    # position 3 is drawn alone, its first 2 frames replaced by the prompt's and its last 2 yielded; the caches
    # then hold the prompt's frames, so the positions after are the inverse of their noise given the sequence as
    # yielded: scoring prompt + continuation from the start gives back positions 4 and 5's noise
    y, _ = prior.to_noise(prior.normalize(torch.cat([prompt, new], -1)), prior.initial_state(1))
    generator = torch.Generator().manual_seed(0)
    torch.randn(1, 1, LATENT * 4, generator=generator)  # position 3's
    after = torch.randn(prior.draw_positions, 1, LATENT * 4, generator=generator)
    torch.testing.assert_close(y[:, 4:6], after[:2].transpose(0, 1), atol=1e-3, rtol=1e-3)  # float32 through 3 couplings


def test_samples_at_temperature_zero_are_the_image_of_zero_noise():
    prior = untrained()
    z = prior.normalize(LearnedPrior(prior).sample((2, LATENT, 16), 0.0, torch.Generator().manual_seed(1)))
    y, _ = prior.to_noise(z, prior.initial_state(2))
    assert y.abs().max() < 1e-5


def test_the_mixture_base_is_a_gaussian_mixture_and_draws_by_its_weights():
    prior = untrained(config=dataclasses.replace(TINY, mixtures=3))
    base = prior.base
    with torch.no_grad():
        base.logits.copy_(torch.tensor([0.0, 1.0, -1.0]))
        base.means.mul_(20.0)  # far apart: each draw's component is the nearest mean
        base.log_scales.normal_(0, 0.2)
    y = torch.randn(2, 5, base.means.shape[1])
    reference = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=base.logits),
        torch.distributions.Independent(torch.distributions.Normal(base.means, base.log_scales.exp()), 1))
    torch.testing.assert_close(base.log_prob(y), reference.log_prob(y))
    with torch.no_grad():
        drawn = prior.base_draw(4000, 1, 1.0, torch.Generator().manual_seed(0))[0]  # (positions, channels)
    nearest = torch.cdist(drawn, base.means).argmin(-1)
    shares = torch.bincount(nearest, minlength=3) / 4000
    torch.testing.assert_close(shares, torch.softmax(base.logits, -1), atol=0.03, rtol=0)
    zero = prior.base_draw(3, 2, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(zero, base.means[1].expand(2, 3, -1))  # the likeliest component's mean


def test_a_trained_flow_beats_gaussian_and_keeps_sixty_second_samples_alive():
    train = [synthetic_latents(3000, seed) for seed in range(2)]
    config = dataclasses.replace(TINY, hidden_size=32, layers=3, couplings=4, batch_size=16, sequence_frames=64,
                                 max_steps=200, max_minutes=None, valid_every=50, learning_rate=3e-3,
                                 input_noise=0.0)
    result = fit_prior(config, train, [synthetic_latents(1000, 9)])
    held_out = synthetic_latents(1000, 7)
    gaussian = float(0.5 * (np.square(held_out).sum(0) + LATENT * np.log(2 * np.pi)).mean())
    nll = result.prior.nll(torch.from_numpy(held_out)[None])
    assert nll < gaussian - 5.0, (nll, gaussian)
    z = LearnedPrior(result.prior).sample((2, LATENT, round(60 * 62.5)), 1.0, torch.Generator().manual_seed(0))
    reference = np.concatenate(train, axis=1)
    for row in z.numpy():
        assert np.isfinite(row).all()
        assert windows_in_range(row, reference, round(5 * 62.5)) == 1.0


def test_the_kept_inverse_follows_loaded_and_trained_weights():
    """Sampling keeps each 1x1 mix's inverse in eval mode; a load or a training step must not leave it stale."""
    first, second = untrained(seed=0), untrained(seed=1)

    def sample(prior) -> torch.Tensor:
        return LearnedPrior(prior).sample((1, LATENT, 16), 1.0, torch.Generator().manual_seed(2))

    sample(first)  # keeps first's inverses
    first.load_state_dict(second.state_dict())
    assert torch.equal(sample(first), sample(second))
    first.train()  # a training step changes the weights in place
    with torch.no_grad():
        first.couplings[0].mix.mul_(2.0)
    first.eval()
    fresh = untrained(seed=5)
    fresh.load_state_dict(first.state_dict())
    assert torch.equal(sample(first), sample(fresh))
    assert not torch.allclose(sample(first), sample(second))


def test_sequence_frames_must_fill_whole_positions():
    with pytest.raises(ConfigError) as error:
        PriorConfig(kind="flow", group_frames=8, sequence_frames=100)
    assert error.value.key == "sequence_frames"
    PriorConfig(kind="gru", group_frames=8, sequence_frames=100)  # the autoregressive priors do not group frames


def test_a_conditional_flow_is_refused_in_one_line(tmp_path):
    with pytest.raises(UserError, match="prior.kind flow is not conditional"):
        build_prior(TINY, LATENT, labels=3)
    # and in the recipe, before any training
    from conftest import write_frame_recipe

    from audiovae.config.recipe import load_recipe

    recipe = write_frame_recipe(tmp_path / "labelled.yaml", tmp_path / "data", conditional=True)
    with pytest.raises(UserError, match=r"labelled.yaml: prior.kind: the flow prior is not conditional"):
        load_recipe(recipe, overrides=("prior.kind=flow",))
    load_recipe(recipe)  # its GRU prior is conditional

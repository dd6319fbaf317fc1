"""Conditional conv and mel models (model.conditional): the label changes what they encode and decode, a model bound
to a label (LabelledVAE) is the same numbers, an unconditional model is built as before, and the recipe checks."""

from __future__ import annotations

import copy

import pytest
import torch

from audiovae.config.recipe import recipe_from_dict
from audiovae.config.schema import ConfigError
from audiovae.models import LabelledVAE, build_model
from audiovae.priors.learned import LatentPrior, PriorConfig
from tests.models.test_families import TINY, model_input

LABELS = ["kick", "snare", "hat"]


def conditional(name: str, **model) -> dict:
    raw = copy.deepcopy(TINY[name])
    raw["model"].update({"conditional": True, "labels": LABELS, **model})
    return raw


@pytest.mark.parametrize("name", ["conv1", "conv4", "mel"])
def test_the_label_changes_encoding_and_decoding_and_binding_it_gives_the_same_numbers(name):
    torch.manual_seed(0)
    net = build_model(recipe_from_dict(conditional(name), name)).eval()
    with torch.no_grad():
        for embedding in (net.label_embedding.encoder, net.label_embedding.decoder):
            embedding.weight.normal_()  # trained biases: far from zero
        x = model_input(net, 4 * net.hop * 5)
        kick, snare = torch.zeros(2, dtype=torch.long), torch.ones(2, dtype=torch.long)
        z = net.encode(x, kick).mean
        assert not torch.equal(z, net.encode(x, snare).mean)
        assert not torch.equal(net.decode(z, label=kick), net.decode(z, label=snare))
        bound = LabelledVAE(net, 1)
        assert torch.equal(bound.encode(x).mean, net.encode(x, snare).mean)
        assert torch.equal(bound.decode(z, x.shape[-1]), net.decode(z, x.shape[-1], snare))
        assert bound(x).reconstruction.shape == x.shape
    with pytest.raises(ValueError, match="needs a label"):
        net.encode(x)
    with pytest.raises(ValueError, match="takes no label"):
        bound.decode(z, label=kick)


@pytest.mark.parametrize("name", ["conv4", "mel"])
def test_an_unconditional_model_draws_the_same_weights_and_has_no_label_parameters(name):
    torch.manual_seed(0)
    plain = build_model(recipe_from_dict(TINY[name], name))
    torch.manual_seed(0)
    labelled = build_model(recipe_from_dict(conditional(name), name))
    assert plain.labels == 0 and labelled.labels == 3
    assert not any("label" in key for key in plain.state_dict())
    weights = labelled.state_dict()
    for key, value in plain.state_dict().items():  # the embedding is drawn after everything else
        assert torch.equal(value, weights[key]), key


@pytest.mark.parametrize(("model", "key", "message"), [
    ({"conditional": False}, "model.labels", "are for conditional models"),
    ({"labels": ["a"]}, "model.labels", "two labels or more"),
    ({"labels": ["a", "a"]}, "model.labels", "must not repeat"),
    ({"causal": True, "strides": [2, 2]}, "model.conditional", "do not stream yet"),
])
def test_recipe_checks(model, key, message):
    with pytest.raises(ConfigError, match=message) as error:
        recipe_from_dict(conditional("conv4", **model), "x")
    assert error.value.key == key


def test_an_unconditional_recipe_saves_no_conditioning_keys():
    plain = recipe_from_dict(TINY["mel"], "mel").to_dict()["model"]
    assert "conditional" not in plain and "labels" not in plain
    saved = recipe_from_dict(conditional("mel"), "mel").to_dict()["model"]
    assert saved["conditional"] is True and saved["labels"] == LABELS


def test_a_conditional_prior_scores_and_draws_by_label():
    torch.manual_seed(0)
    prior = LatentPrior(PriorConfig(hidden_size=8, layers=1, mixtures=2, dropout=0.0), 3, labels=2).eval()
    with torch.no_grad():
        prior.label_embedding.weight.copy_(torch.tensor([[3.0, 0, 0], [-3.0, 0, 0]]))
    z = torch.randn(1, 3, 20)
    assert prior.nll(z, torch.tensor([0])) != prior.nll(z, torch.tensor([1]))

    def draw(label: int) -> torch.Tensor:
        return torch.cat(list(prior.sample_stream(1, 6, generator=torch.Generator().manual_seed(1),
                                                  label=torch.tensor([label]))), -1)

    assert torch.equal(draw(0), draw(0)) and not torch.equal(draw(0), draw(1))
    # streaming under a label is the offline model under it: the likeliest frame (temperature 0) at each step
    # is the mean its offline pass predicts for it
    stream = torch.cat(list(prior.sample_stream(1, 5, temperature=0.0, label=torch.tensor([1]))), -1)
    inputs = torch.nn.functional.pad(prior.normalize(stream)[..., :-1], (1, 0))
    logits, means, _ = prior.mixture(prior.core(prior.conditioned(inputs, torch.tensor([1]))).transpose(1, 2))
    offline = means[0, torch.arange(5), logits[0].argmax(-1)].T * prior.latent_std[:, None] + prior.latent_mean[:, None]
    assert torch.allclose(stream[0], offline, atol=1e-5)
    with pytest.raises(ValueError, match="needs a label"):
        prior.nll(z)

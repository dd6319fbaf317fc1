"""Export and stream print none of torch 2.14's deprecation warnings for the TorchScript exporter, and the filters
that silence them (audiovae.nn.legacy_export) match what this torch says, only inside their block."""

from __future__ import annotations

import warnings

import pytest
import torch
from click.testing import CliRunner
from conftest import write_signal

from audiovae.cli.main import main
from audiovae.config.recipe import recipe_from_dict
from audiovae.models import build_model
from audiovae.nn.legacy_export import legacy_export
from audiovae.priors.learned import build_prior
from audiovae.realtime.export import export_net
from audiovae.realtime.stream_host import ScriptRunner

TINY = {"channels": 4, "max_channels": 8, "latent_size": 3, "residual_layers": 1, "kernel_size": 3,
        "bands": 4, "strides": [4, 4], "causal": True}


def deprecations(caught) -> list[str]:
    return [f"{w.category.__name__}: {w.message}" for w in caught
            if issubclass(w.category, (FutureWarning, DeprecationWarning))]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    recipe = recipe_from_dict({"data": {"segment_samples": 2048}, "model": TINY,
                               "prior": {"kind": "gru", "hidden_size": 8, "layers": 1}}, "tiny")
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("legacy") / "export"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_net(build_model(recipe).eval(), recipe, folder, prior=build_prior(recipe.prior, 3))
    return folder, caught


def test_export_prints_no_deprecation(exported):
    _, caught = exported
    assert deprecations(caught) == []


def test_stream_prints_no_deprecation(exported, tmp_path, recwarn):
    folder, _ = exported
    source = write_signal(tmp_path / "in.wav", 0.25, 16000, kind="chirp", frequency=200.0, stop_frequency=3000.0)
    for engine in ("torchscript", "onnx"):
        result = CliRunner().invoke(main, ["stream", str(source), str(tmp_path / f"{engine}.wav"), "--block", "512",
                                           "--engine", engine, "--export", str(folder)])
        assert result.exit_code == 0, result.output
        assert "Warning" not in result.output
    assert deprecations(recwarn.list) == []


def test_the_filters_match_this_torch_and_only_inside_the_block(exported):
    folder, _ = exported
    # outside: torch warns (so the filter's text is the one torch uses: if torch rewords it, this test says so)
    with pytest.warns(FutureWarning, match="torch.jit.load"):
        torch.jit.load(str(folder / "model.ts"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ScriptRunner(folder / "model.ts")
        with legacy_export():
            warnings.warn("another notice", FutureWarning, stacklevel=1)  # anything else still shows
    assert [str(w.message) for w in caught] == ["another notice"]

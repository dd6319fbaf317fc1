"""evaluate on a labelled dataset: per label, the Frechet distance of that label's prior samples to its held-out audio,
against the distance to the other labels' (docs/conditional.md)."""

from __future__ import annotations

import numpy as np

from audiovae.evaluation.by_label import frechet_by_label
from audiovae.evaluation.metrics import FeatureMoments, log_mel_features
from tests.conftest import TINY_RATE, synthesize


class FixedSounds:
    """A stand-in Model: a conditional one draws tones under 'tone' and noise under 'noise'; an unconditional one
    (labels ()) draws half of each, whatever it is asked."""

    sample_rate = TINY_RATE

    def __init__(self, labels: tuple[str, ...]):
        self.labels = labels

    def generate(self, n, seconds, seed=0, label=None):
        kinds = [label] * n if label else ["tone", "noise"] * (n // 2)
        return [sound(kind, seed + i) for i, kind in enumerate(kinds)]


def sound(kind: str, seed: int) -> np.ndarray:
    if kind == "tone":
        return synthesize(0.5, TINY_RATE, kind="sine", frequency=300.0 + 40 * seed)[:, 0]
    return synthesize(0.5, TINY_RATE, kind="noise", seed=seed)[:, 0]


def held_out() -> tuple[list[FeatureMoments], list[str]]:
    labels = ["tone", "noise"] * 3
    return [FeatureMoments.of(log_mel_features(sound(kind, 100 + i), TINY_RATE)) for i, kind in
            enumerate(labels)], labels


def test_a_conditional_runs_samples_are_nearer_their_own_labels_audio():
    moments, labels = held_out()
    table = frechet_by_label(FixedSounds(("noise", "tone")), moments, labels, 4, 0.5, seed=0)
    assert list(table) == ["noise", "tone"] and table["tone"]["files"] == 3
    for row in table.values():  # measured: noise 2.3 / 4770, tone 1032 / 3874 (tones of other pitches)
        assert row["frechet_own"] < 0.3 * row["frechet_others"]
        assert row["heldout_vs_others"] > 4 * row["frechet_own"]


def test_an_unconditional_runs_one_set_of_samples_stands_for_every_label():
    moments, labels = held_out()
    table = frechet_by_label(FixedSounds(()), moments, labels, 4, 0.5, seed=0)
    # half tones, half noise: as far from each label's audio as from the other's
    assert table["tone"]["frechet_own"] == table["noise"]["frechet_others"]
    assert table["noise"]["frechet_own"] == table["tone"]["frechet_others"]
    conditional = frechet_by_label(FixedSounds(("noise", "tone")), moments, labels, 4, 0.5, seed=0)
    for label, row in table.items():  # measured: noise 1922 against 2.3, tone 2331 against 1032
        assert row["frechet_own"] > 2 * conditional[label]["frechet_own"]


def test_evaluate_of_a_conditional_run_prints_the_table(conditional_run):
    from audiovae.evaluation.evaluate import evaluate

    result = evaluate(conditional_run, perceptual_metrics=False, progress=False)
    by_label = result.metrics["generation"]["by_label"]
    assert set(by_label) == {"noise", "tone"}
    for row in by_label.values():  # a model this small is not judged here (test_conditional.py does that)
        assert np.isfinite(row["frechet_own"]) and np.isfinite(row["frechet_others"]) and row["files"] == 1
    assert "generation by label: Frechet distance of its own samples (under the label)" in result.table
    assert result.metrics["files"] == 2  # every held-out file, each encoded under its own label
    # the conditional prior finds each held-out file likeliest under its own label (chance: one in two)
    assert [row["prior_picks_label"] for row in by_label.values()] == [1.0, 1.0]

"""Generation by label (docs/conditional.md): for each label of a labelled dataset, the Frechet distance of that
label's prior samples to that label's held-out audio, against their distance to the other labels' held-out audio.

A conditional run draws each label's samples under the label; an unconditional run's one set of samples stands
for every label, so its two columns show what ignoring the label scores. `heldout_vs_others` (the label's held-out
audio against the others') says how far apart the labels are to begin with.
`prior_picks_label` (a conditional learned prior's) is the share of the label's held-out files whose latents the
prior finds likeliest under their own label: chance is one over the labels, and a prior that ignored its label
would score chance.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from audiovae.evaluation.metrics import FeatureMoments, frechet_distance, log_mel_features

if TYPE_CHECKING:
    from audiovae.synthesis.model import Model


def split_labels(manifest: dict[str, Any], split: str) -> list[str | None]:
    """The label of each file of `split` in manifest order (None for an unlabelled dataset's files)."""
    from audiovae.data.manifest import split_records

    return [record.get("label") for record in split_records(manifest, split)]


def likeliest_label(model: Model, z: torch.Tensor) -> str:
    """The label under which a conditional run's learned prior gives the latents z (1, latent_size, frames) the
    highest likelihood."""
    prior = model.learned_prior.model
    nll = [prior.nll(z.to(prior.latent_mean.device), torch.tensor([i])) for i in range(len(model.labels))]
    return model.labels[min(range(len(nll)), key=nll.__getitem__)]


def frechet_by_label(model: Model, held_out: list[FeatureMoments], labels: list[str], count: int, seconds: float,
                     seed: int, likeliest: list[str] | None = None, shared: FeatureMoments | None = None
                     ) -> dict[str, dict[str, Any]]:
    """label -> {files, frechet_own, frechet_others, heldout_vs_others} over held-out files' log-mel moments
    `held_out` (one per file) and their `labels`; `count` prior samples of `seconds` per label (a conditional
    run's, under the label; else one shared set), drawn from the run's default prior, sample i from seed + i;
    likeliest: each file's likeliest_label, for prior_picks_label; shared: an unconditional run's samples' moments
    when the caller has them already (evaluate drew the same samples for its own Frechet distance)."""
    rate = model.sample_rate
    conditional = bool(model.labels)
    if not conditional and shared is None:
        shared = _moments(model.generate(count, seconds, seed=seed), rate)
    result = {}
    for label in sorted(set(labels)):
        own = sum((m for m, name in zip(held_out, labels, strict=True) if name == label), FeatureMoments())
        others = sum((m for m, name in zip(held_out, labels, strict=True) if name != label), FeatureMoments())
        generated = _moments(model.generate(count, seconds, seed=seed, label=label), rate) if conditional else shared
        result[label] = {"files": labels.count(label), "frechet_own": frechet_distance(generated, own),
                         "frechet_others": frechet_distance(generated, others) if others.count else None,
                         "heldout_vs_others": frechet_distance(own, others) if others.count else None}
        if likeliest is not None:
            picks = [pick for pick, name in zip(likeliest, labels, strict=True) if name == label]
            result[label]["prior_picks_label"] = picks.count(label) / len(picks)
    return result


def _moments(waves: list, rate: int) -> FeatureMoments:
    moments = FeatureMoments()
    for wave in waves:
        moments.add(log_mel_features(wave, rate))
    return moments


def by_label_lines(by_label: dict[str, dict[str, Any]], conditional: bool) -> list[str]:
    """The table evaluate prints: one line per label."""
    whose = "its own samples (under the label)" if conditional else "the run's samples (unconditional)"
    lines = [f"generation by label: Frechet distance of {whose} to the label's held-out audio / to the other "
             "labels' (the label's audio to the others' in brackets)"]
    for label, row in by_label.items():
        others = "-" if row["frechet_others"] is None else f"{row['frechet_others']:.2f}"
        apart = "-" if row["heldout_vs_others"] is None else f"{row['heldout_vs_others']:.2f}"
        picks = (f", the prior's likeliest label for {row['prior_picks_label']:.0%} of them"
                 if "prior_picks_label" in row else "")
        lines.append(f"  {label}: {row['frechet_own']:.2f} / {others}  [{apart}]  ({row['files']} files{picks})")
    return lines

"""A conditional run's labels in synthesis (docs/conditional.md): a Model bound to one label, and the label of each
of n generated sounds."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING

from audiovae.errors import UserError
from audiovae.models import LabelledVAE
from audiovae.priors.learned import LearnedPrior

if TYPE_CHECKING:
    from audiovae.synthesis.model import Model


def is_bound(model: Model) -> bool:
    """Whether a conditional run's model already has its label (its network takes none)."""
    return model.net.labels == 0


def bind_label(model: Model, label: str | None) -> Model:
    """A shallow copy of `model` whose network (models.LabelledVAE) and learned prior take `label`; None: `model`
    itself, refused for a conditional run. Every refusal is one line: a label on an unconditional run, an unknown
    label (the known ones listed), no label on a conditional run."""
    if label is None:
        if model.labels and not is_bound(model):
            raise UserError(f"{model.run}: this run is conditional; give a label (--label), one of: "
                            f"{', '.join(model.labels)}")
        return model
    if not model.labels:
        raise UserError(f"--label {label}: {model.run} is not conditional (trained without labels); leave --label "
                        "out, or train with model.conditional: true on a dataset prepared with --labels")
    if label not in model.labels:
        raise UserError(f"--label {label}: unknown label; this run knows {', '.join(model.labels)}")
    if is_bound(model):
        raise UserError(f"--label {label}: this model is already bound to a label")
    index = model.labels.index(label)
    bound = copy.copy(model)  # shares the weights, the workers and the measured context
    bound.net = LabelledVAE(model.net, index)
    if isinstance(model.learned_prior, LearnedPrior):
        bound.learned_prior = model.learned_prior.with_label(index)
    return bound


def labels_in_turn(model: Model, n: int, label: str | Sequence[str] | None = None) -> list[str] | None:
    """The label of each of n sounds: the given one, the given ones in turn, or (None on a conditional run) the
    run's labels in turn; None for an unconditional run without labels or a model bound to one."""
    if label is None and not (model.labels and not is_bound(model)):
        return None
    names = list(model.labels) if label is None else [label] if isinstance(label, str) else list(label)
    if not names:
        raise UserError("--label: give at least one label")
    return [names[i % len(names)] for i in range(n)]

"""Cross-subject folds (``protocol.split``): which subjects train a model and which it is
evaluated (and later adapted) on.

In: the per-subject table (role, labelled) and the protocol settings. Out: ``Fold`` objects.
- ``fixed``: roles from the manifest (split column, split file or the protocol's target
  list): one fold, the labelled source subjects train, the target subjects are evaluated.
- ``kfold``: every labelled subject is hashed into one of k folds (sha256 of its id, so a
  subject's fold never changes as subjects are added); fold i's subjects are its targets.
- ``loso``: every labelled subject is the target of its own fold.
Unassigned-but-labelled subjects count as source under ``fixed``; unlabelled subjects are
only ever targets.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pandas as pd


class FoldError(ValueError):
    """The subjects cannot support the protocol (no source, no target...)."""


@dataclass(frozen=True)
class Fold:
    fold: int
    name: str  # "fixed", "kfold-3", "loso-<subject>": part of the model id
    source: tuple[str, ...]  # labelled subjects that train (and validate) the model
    targets: tuple[str, ...]  # subjects it is evaluated and adapted on


def fold_of(subject: str, k: int) -> int:
    return int(hashlib.sha256(subject.encode()).hexdigest(), 16) % k


def make_folds(subjects: pd.DataFrame, split: str, k: int = 5) -> list[Fold]:
    labelled = sorted(subjects.loc[subjects["labelled"], "subject_id"].astype(str))
    if split == "fixed":
        targets = tuple(sorted(subjects.loc[subjects["role"] == "target", "subject_id"].astype(str)))
        source = tuple(s for s in labelled if s not in targets)
        if not targets:
            raise FoldError("no target subjects: give roles (a split column, --split FILE or "
                            "protocol.target_subjects), or use protocol.split=kfold|loso")
        return [Fold(0, "fixed", source, targets)]
    if split == "kfold":
        groups: dict[int, list[str]] = {}
        for s in labelled:
            groups.setdefault(fold_of(s, k), []).append(s)
        return [Fold(i, f"kfold{k}-{i}", tuple(s for s in labelled if s not in g), tuple(g))
                for i, g in sorted(groups.items())]
    if split == "loso":
        return [Fold(i, f"loso-{s}", tuple(x for x in labelled if x != s), (s,))
                for i, s in enumerate(labelled)]
    raise FoldError(f"protocol.split must be fixed, kfold or loso, got {split!r}")

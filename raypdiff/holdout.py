"""Hold-out folds over tasks for the unseen-task evaluation: k-fold, leave-one-family-out, and k folds of whole
families. A held-out task's label-swapped twin is held out with it, so no fold's generator has seen either."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from raypdiff.errors import ConfigError, require
from raypdiff.tasks import TaskSpec


@dataclass(frozen=True)
class Fold:
    name: str  # "fold-0", ... or "family-<family>"
    heldout: tuple[str, ...]  # evaluated as unseen
    train: tuple[str, ...]  # the zoo tasks this fold's generator trains on


def twin_groups(specs: list[TaskSpec]) -> list[list[str]]:
    """Tasks joined by twin_of (transitively), each group in list order, groups in order of their first task."""
    parent = {s.name: s.name for s in specs}

    def root(n: str) -> str:
        while parent[n] != n:
            n = parent[n]
        return n

    for s in specs:
        if s.twin_of is not None:
            require(s.twin_of in parent, f"task {s.name}: twin_of {s.twin_of} is not in the task list")
            parent[root(s.name)] = root(s.twin_of)
    groups: dict[str, list[str]] = {}
    for s in specs:
        groups.setdefault(root(s.name), []).append(s.name)
    return list(groups.values())


def _fold(name: str, heldout: set[str], specs: list[TaskSpec]) -> Fold:
    return Fold(name, tuple(s.name for s in specs if s.name in heldout),
                tuple(s.name for s in specs if s.name not in heldout))


def kfold(specs: list[TaskSpec], k: int, seed: int = 0) -> list[Fold]:
    """k folds that hold out every task exactly once: twin groups shuffled by `seed`, each dealt to the fold
    holding the fewest tasks so far (folds differ in size by at most the largest group)."""
    groups = twin_groups(specs)
    require(2 <= k <= len(groups), f"holdout k: must be 2..{len(groups)} (the number of twin groups), got {k}")
    order = np.random.default_rng(seed).permutation(len(groups))
    folds: list[set[str]] = [set() for _ in range(k)]
    for g in order:
        min(folds, key=len).update(groups[g])
    return [_fold(f"fold-{i}", held, specs) for i, held in enumerate(folds)]


def family_folds(specs: list[TaskSpec]) -> list[Fold]:
    """One fold per family: the whole family held out, the generator trained on every other family."""
    missing = [s.name for s in specs if not s.family]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ConfigError(f"leave-one-family-out: task {missing[0]}{more} has no family")
    families = list(dict.fromkeys(s.family for s in specs))
    require(len(families) >= 2, f"leave-one-family-out: needs 2+ families, got {families}")
    # twins share a family (tasks.check_twins), so a family fold never splits a twin pair
    return [_fold(f"family-{f}", {s.name for s in specs if s.family == f}, specs) for f in families]


def family_groups(specs: list[TaskSpec], k: int) -> list[Fold]:
    """k folds of whole families (no held-out task's family is in its fold's training tasks, as with
    leave-one-family-out, for k generators instead of one per family): families, largest first, each dealt to the
    fold holding the fewest tasks so far."""
    one = family_folds(specs)  # checks every task has a family
    require(2 <= k <= len(one), f"holdout.folds: must be 2..{len(one)} (the number of families), got {k}")
    folds: list[set[str]] = [set() for _ in range(k)]
    for f in sorted(one, key=lambda f: -len(f.heldout)):
        min(folds, key=len).update(f.heldout)
    return [_fold(f"families-{i}", held, specs) for i, held in enumerate(folds)]

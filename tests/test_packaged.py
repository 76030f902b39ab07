"""Real labelled text shipped inside packages: every packaged task loads as `collect` would, with all its labels on
both sides, train and test disjoint, groups (episodes, speakers) on one side only, the same rows every time."""
from __future__ import annotations

import numpy as np
import pytest

from raypdiff import packaged
from raypdiff.config import ConfigError
from raypdiff.tasks import _PACKAGED, builtin_spec, load_task

TASKS = sorted(_PACKAGED)


def test_six_tasks_in_five_new_families():
    families = {_PACKAGED[t]["family"] for t in TASKS}
    assert len(TASKS) >= 6 and families == {"spam", "authorship", "politics", "humor", "language id"}


@pytest.mark.parametrize("task", TASKS)
def test_packaged_task_loads(packaged_data, task):
    spec = builtin_spec(task, None)
    data = load_task(spec, 64, 300, 0)
    assert len(data.train) >= 1000 and len(data.val) == 64 and len(data.test) == 300
    for split in (data.train, data.test):
        assert set(np.unique(split.labels)) == set(range(spec.num_labels))  # every label on both sides
    assert not {t for t, in data.train.texts} & {t for t, in data.test.texts}  # each text once, on one side
    again = load_task(spec, 64, 300, 0)
    assert again.test.texts == data.test.texts and np.array_equal(again.train.labels, data.train.labels)


def test_groups_stay_on_one_side(packaged_data):
    """A Seinfeld episode (and a convention speaker) is all train or all dev: lines of one scene never straddle."""
    for name, groups in (("seinfeld_speaker", {ep for _, _, _, ep in packaged.seinfeld_lines()}),
                         ("convention_party", {sp for _, _, sp in packaged.convention_party()})):
        sides = {g: packaged.zlib.crc32(g.encode()) % 10 < packaged.DEV_SHARE for g in groups}
        assert 0 < sum(sides.values()) < len(sides), name  # both sides get groups
    split = packaged.rows("convention_party", ("democrat", "republican"))
    by_text: dict = {}
    for t, _, sp in packaged.convention_party():
        by_text.setdefault(t, sp)  # a text said twice counts where it was first (rows keeps the first)
    dev_speakers = {by_text[t] for t, _ in split["dev"]}
    assert not dev_speakers & {by_text[t] for t, _ in split["train"]}


def test_unknown_source_is_one_line():
    with pytest.raises(ConfigError, match="is not one of"):
        packaged.rows("nope", ("a",))

"""bench/unseen.py carries a scheme it did not re-run over from the existing report, only for the same suite."""
import importlib.util
import json
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("bench_unseen", Path(__file__).parents[1] / "bench" / "unseen.py")
unseen = importlib.util.module_from_spec(spec)
spec.loader.exec_module(unseen)

SUITE = {"tasks": 5, "families": 2, "captures": 40, "seeds": [0, 1], "collect_seconds": 100.0}


def report(tmp_path: Path, suite: dict) -> None:
    old = {"suite": suite, "holdout": {"kfold": {"A": {"generated": {"mean": 0.5, "ci": [0.4, 0.6]}}}}}
    old.update({key: {"kfold": f"{key} of kfold"} for key in unseen.KEYS})
    (tmp_path / "unseen.json").write_text(json.dumps(old))
    (tmp_path / "unseen.md").write_text("# Unseen tasks on the suite: ...\n# Unseen tasks (kfold): 1 held-out tasks\n\n"
                                        "| method | average |\n")


@pytest.mark.parametrize("old_suite, kept", [
    (SUITE, ["kfold"]),
    ({**SUITE, "collect_seconds": 50.0}, ["kfold"]),  # another collection of the same suite
    ({**SUITE, "captures": 80}, []),  # another suite: nothing carried over
    ({**SUITE, "seeds": [0]}, []),
])
def test_keep_earlier(tmp_path, old_suite, kept):
    report(tmp_path, old_suite)
    new = {**SUITE, "collect_seconds": 200.0}
    result = {"suite": new, "measured_on": {"family": new}, "holdout": {"family": {}},
              **{key: {"family": None} for key in unseen.KEYS}}
    sections = {"family": "# Unseen tasks (family): 0 held-out tasks\n"}
    assert unseen.keep_earlier(tmp_path, new, {"family"}, result, sections) == kept
    if kept:
        assert result["measured_on"]["kfold"] == old_suite  # the collection k-fold was measured on, not today's
        assert result["flip"]["kfold"] == "flip of kfold" and result["holdout"]["kfold"]["A"]["generated"]["mean"] == 0.5
        assert sections["kfold"] == "# Unseen tasks (kfold): 1 held-out tasks\n\n| method | average |\n"
    else:
        assert set(result["flip"]) == {"family"} and set(sections) == {"family"}


def test_keep_earlier_without_a_report(tmp_path):
    assert unseen.keep_earlier(tmp_path, SUITE, {"family"}, {}, {}) == []

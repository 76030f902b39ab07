"""Every user mistake reaching `raypdiff collect` ends with exit code 2, exactly one stderr line
`raypdiff: error: ...` naming the problem, no zoo that looks complete, and no Ray started."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from raypdiff import cli

# ---- helpers ----

CSV_OK = "text,y\ngood,pos\nbad,neg\n"


def custom_task(tmp: Path, text: str, suffix: str = "csv", **change) -> dict:
    f = tmp / f"rows.{suffix}"
    f.write_text(text)
    d = dict(name="mine", description="Tiny sentiment.", text_fields=["text"], label_field="y",
             metric="accuracy", label_names=["neg", "pos"], train=str(f), dev=str(f))
    d.update(change)
    return d


def write_config(tmp: Path, tasks: list, **sections) -> str:
    cfg = {"tasks": tasks, "train": {"steps": 2, "batch_size": 2}, "capture": {"num": 1},
           "model": {"max_length": 32}, "tracking": {"enabled": False}, **sections}
    p = tmp / "bad.yaml"
    p.write_text(json.dumps(cfg))  # JSON is YAML
    return str(p)


def assert_no_complete_zoo(zoo: Path) -> None:
    meta = zoo / "meta.json"
    if meta.exists():
        try:
            complete = json.loads(meta.read_text()).get("complete")
        except ValueError:  # not JSON: certainly not a complete zoo
            complete = None
        assert complete is not True, "a failed collect left a complete zoo"
    assert not list(zoo.glob("shards/*.parquet")), "a failed collect left shards"


@pytest.fixture
def no_ray(monkeypatch):
    """Every case must fail before Ray starts: make starting it a test failure."""
    import ray

    def refuse(*a, **k):
        raise AssertionError("Ray was started for an input that should have been rejected first")

    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    yield
    assert not ray.is_initialized()


def run_main(argv: list[str], capsys) -> tuple[int, list[str]]:
    try:
        rc = cli.main(argv)
    except SystemExit as e:  # argparse
        rc = e.code
    except Exception as e:  # noqa: BLE001 — a traceback is exactly what these tests forbid
        pytest.fail(f"traceback instead of one clean error line: {type(e).__name__}: {e}")
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return rc, err


def assert_one_error_line(rc: int, err: list[str], match: str) -> None:
    assert rc == 2, (rc, err)
    assert len(err) == 1, f"expected exactly one stderr line, got {len(err)}:\n" + "\n".join(err[-10:])
    assert err[0].startswith("raypdiff: error: "), err[0]
    assert match in err[0], err[0]


# ---- the cases ----
# Each case builds (argv after `collect`, text the error line must contain) from (tmp, zoo, data root).

def _missing_data(tmp, zoo, data):
    return ["data.root=/nonexistent", "tasks=[SST-2]"], "/nonexistent/glue/SST-2"


def _unknown_task(tmp, zoo, data):
    return [f"data.root={data}", "tasks=[SST-2,SST2]"], "unknown task 'SST2'"


def _missing_column(tmp, zoo, data):
    return ["-c", write_config(tmp, [custom_task(tmp, "text,label\ngood,pos\nbad,neg\n")])], "missing column 'y'"


def _missing_text_column_jsonl(tmp, zoo, data):
    rows = '{"sentence": "good", "y": 1}\n{"sentence": "bad", "y": 0}\n'
    return ["-c", write_config(tmp, [custom_task(tmp, rows, "jsonl")])], "missing column 'text'"


def _label_outside(tmp, zoo, data):
    return ["-c", write_config(tmp, [custom_task(tmp, CSV_OK + "meh,neutral\n")])], "label 'neutral' is outside"


def _label_index_outside(tmp, zoo, data):
    return ["-c", write_config(tmp, [custom_task(tmp, "text,y\na,0\nb,1\nc,2\n")])], "label '2' is outside"


def _regression_label_not_number(tmp, zoo, data):
    task = custom_task(tmp, "text,y\na,0.5\nb,high\n", label_names=None, metric="pearson")
    return ["-c", write_config(tmp, [task])], "'high' is not a number"


def _empty_split_csv(tmp, zoo, data):
    return ["-c", write_config(tmp, [custom_task(tmp, "text,y\n")])], "empty"


def _empty_split_tsv(tmp, zoo, data):
    return ["-c", write_config(tmp, [custom_task(tmp, "text\ty\n", "tsv")])], "empty"


def _empty_dev_only(tmp, zoo, data):
    task = custom_task(tmp, CSV_OK)
    dev = tmp / "dev.csv"
    dev.write_text("text,y\n")
    task["dev"] = str(dev)
    return ["-c", write_config(tmp, [task])], f"(test) {dev}: the split is empty"  # dev rows are the test split


def _empty_val_file(tmp, zoo, data):
    val = tmp / "val.csv"
    val.write_text("text,y\n")
    return ["-c", write_config(tmp, [custom_task(tmp, CSV_OK, val=str(val))])], f"(val) {val}: the split is empty"


def _train_too_small_for_val(tmp, zoo, data):
    return ["-c", write_config(tmp, [custom_task(tmp, "text,y\ngood,pos\n")])], "at least 2 rows to carve val"


def _bad_metric(tmp, zoo, data):
    return ["-c", write_config(tmp, [custom_task(tmp, CSV_OK, metric="bleu")])], "metric 'bleu'"


def _unknown_task_key(tmp, zoo, data):
    return ["-c", write_config(tmp, [custom_task(tmp, CSV_OK, colour="red")])], "colour"


def _bad_target(tmp, zoo, data):
    return [f"data.root={data}", "tasks=[RTE]", "lora.target_modules=[nonexistent]"], "'nonexistent'"


def _bad_base_model(tmp, zoo, data):
    return [f"data.root={data}", "tasks=[RTE]", "model.base=/nonexistent/model"], "model.base"


def _output_under_file(tmp, zoo, data):
    (tmp / "afile").write_text("not a folder")
    return [f"data.root={data}", "tasks=[RTE]", f"collect.output_dir={tmp / 'afile' / 'zoo'}"], "collect.output_dir"


def _output_in_proc(tmp, zoo, data):
    return [f"data.root={data}", "tasks=[RTE]", "collect.output_dir=/proc/raypdiff-zoo"], "collect.output_dir"


def _corrupt_meta(tmp, zoo, data):
    zoo.mkdir(parents=True)
    (zoo / "meta.json").write_text("{not json")
    return [f"data.root={data}", "tasks=[RTE]"], "meta.json"


def _config_missing(tmp, zoo, data):
    return ["-c", str(tmp / "nope.yaml")], "no such file"


def _config_not_yaml(tmp, zoo, data):
    p = tmp / "broken.yaml"
    p.write_text("train: [1\n")
    return ["-c", str(p)], "not valid YAML"


def _override_no_equals(tmp, zoo, data):
    return ["train.steps"], "expected key=value"


def _override_bad_yaml(tmp, zoo, data):
    return ["tasks=[SST-2"], "not valid YAML"


def _override_wrong_type(tmp, zoo, data):
    return ["train.steps=ten"], "train.steps"


def _override_unknown_key(tmp, zoo, data):
    return ["train.stepz=5"], "train.stepz"


def _override_into_scalar(tmp, zoo, data):
    return ["train.steps=5", "train.steps.x=1"], "steps is not a section"


def _capture_too_long(tmp, zoo, data):
    return ["train.steps=3", "capture.num=5"], "capture"


def _no_val_rows(tmp, zoo, data):
    return ["eval.val_examples=0"], "eval.val_examples"


def _removed_eval_key(tmp, zoo, data):
    return ["eval.max_examples=300"], "eval.max_examples"


CASES = [
    pytest.param(_missing_data, id="missing-data-folder"),
    pytest.param(_unknown_task, id="unknown-task"),
    pytest.param(_missing_column, id="custom-missing-label-column"),
    pytest.param(_missing_text_column_jsonl, id="custom-missing-text-column-jsonl"),
    pytest.param(_label_outside, id="label-outside-set"),
    pytest.param(_label_index_outside, id="label-index-outside-set"),
    pytest.param(_regression_label_not_number, id="regression-label-not-number"),
    pytest.param(_empty_split_csv, id="empty-split-csv"),
    pytest.param(_empty_split_tsv, id="empty-split-tsv"),
    pytest.param(_empty_dev_only, id="empty-dev-split"),
    pytest.param(_empty_val_file, id="empty-val-file"),
    pytest.param(_train_too_small_for_val, id="train-one-row-no-val-file"),
    pytest.param(_bad_metric, id="custom-bad-metric"),
    pytest.param(_unknown_task_key, id="custom-unknown-key"),
    pytest.param(_bad_target, id="lora-target-missing"),
    pytest.param(_bad_base_model, id="model-base-missing"),
    pytest.param(_output_under_file, id="output-under-a-file"),
    pytest.param(_output_in_proc, id="output-in-proc"),
    pytest.param(_corrupt_meta, id="output-corrupt-meta"),
    pytest.param(_config_missing, id="config-file-missing"),
    pytest.param(_config_not_yaml, id="config-file-not-yaml"),
    pytest.param(_override_no_equals, id="override-no-equals"),
    pytest.param(_override_bad_yaml, id="override-bad-yaml"),
    pytest.param(_override_wrong_type, id="override-wrong-type"),
    pytest.param(_override_unknown_key, id="override-unknown-key"),
    pytest.param(_override_into_scalar, id="override-into-scalar"),
    pytest.param(_capture_too_long, id="capture-longer-than-training"),
    pytest.param(_no_val_rows, id="eval-no-val-rows"),
    pytest.param(_removed_eval_key, id="eval-removed-key"),
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input(case, tmp_path, data_dir, capsys, no_ray):
    zoo = tmp_path / "out" / "zoo"
    args, match = case(tmp_path, zoo, data_dir)
    if not any(a.startswith("collect.output_dir=") for a in args):
        args = [*args, f"collect.output_dir={zoo}"]
    rc, err = run_main(["collect", "-q", *args, "tracking.enabled=false"], capsys)
    assert_one_error_line(rc, err, match)
    assert_no_complete_zoo(zoo)


def test_bad_target_error_line_is_clean_apart_from_progress_bar(tmp_path, data_dir, capsys, no_ray):
    """The part of the LoRA-target case that already holds: exit 2, no traceback, error line last."""
    zoo = tmp_path / "zoo"
    rc, err = run_main(["collect", "-q", f"data.root={data_dir}", "tasks=[RTE]",
                        "lora.target_modules=[nonexistent]", f"collect.output_dir={zoo}"], capsys)
    assert rc == 2 and err[-1].startswith("raypdiff: error: lora.target_modules") and "nonexistent" in err[-1]
    assert sum(line.startswith("raypdiff: error:") for line in err) == 1
    assert not any("Traceback" in line for line in err)
    assert_no_complete_zoo(zoo)


def test_unknown_option_is_argparse_error(capsys):
    rc, err = run_main(["collect", "--bogus"], capsys)
    assert rc == 2 and err[-1].startswith("raypdiff: error:") and "--bogus" in err[-1]


# ---- the real entry point, in a fresh interpreter ----

@pytest.mark.parametrize("args,match", [
    (["-c", "/nonexistent/config.yaml"], "no such file"),
    (["train.steps"], "expected key=value"),
    (["data.root=/nonexistent", "tasks=[SST-2]"], "data file not found"),
])
@pytest.mark.full  # a fresh interpreter per case
def test_cli_subprocess(tmp_path, repo_dir, args, match):
    zoo = tmp_path / "zoo"
    r = subprocess.run([sys.executable, "-m", "raypdiff.cli", "collect", "-q", *args,
                        f"collect.output_dir={zoo}", "tracking.enabled=false"],
                       cwd=repo_dir, capture_output=True, text=True, timeout=300)
    err = [line for line in r.stderr.splitlines() if line.strip()]
    assert_one_error_line(r.returncode, err, match)
    assert r.stdout == ""
    assert_no_complete_zoo(zoo)

"""The one module that imports mlflow: embedded SQLite store by default, params from the typed config."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

from raypdiff.checkpoint import GENERATOR_FILE
from raypdiff.config import Config, ConfigError
from raypdiff.storage import Location, is_uri


def tracking_uri(cfg: Config) -> str:
    if cfg.tracking.uri:
        return cfg.tracking.uri
    if is_uri(cfg.collect.output_dir):  # no disk beside a bucket, and a job's working folder does not last
        raise ConfigError(f"tracking.uri: set it (an MLflow server, or sqlite:////abs/path/mlflow.db) when "
                          f"collect.output_dir is a URI ({cfg.collect.output_dir}), or tracking.enabled=false")
    zoo = Location.of(cfg.collect.output_dir, "collect.output_dir").local()
    db = zoo.parent / "mlflow.db"  # beside the zoo's folder
    return f"sqlite:///{db}"  # db is absolute, so this reads sqlite:////abs/path


def flat_params(d: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and all(isinstance(x, (dict, str, int, float, bool, type(None), list)) for x in v.values()):
            out.update(flat_params(v, key + "."))
        else:
            out[key] = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
    return {k: v[:6000] for k, v in out.items()}  # MLflow caps param values


def _start(cfg: Config, run_name: str):
    import mlflow
    from mlflow.utils.uri import resolve_uri_if_local  # how MLflow itself records a relative location

    uri, wanted = tracking_uri(cfg), cfg.tracking.artifact_location
    mlflow.set_tracking_uri(uri)
    exp = mlflow.get_experiment_by_name(cfg.tracking.experiment)
    if exp is None:
        if wanted is None and uri.startswith("sqlite:///"):
            # Artifacts beside the database, not in ./mlruns of whatever folder the command ran in.
            wanted = (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()
        mlflow.create_experiment(cfg.tracking.experiment, artifact_location=wanted)
    elif wanted is not None and exp.artifact_location.rstrip("/") != resolve_uri_if_local(wanted).rstrip("/"):
        raise ConfigError(f"tracking.artifact_location: the experiment {cfg.tracking.experiment!r} keeps its "
                          f"artifacts at {exp.artifact_location}; name a new tracking.experiment for {wanted}")
    mlflow.set_experiment(cfg.tracking.experiment)
    return mlflow.start_run(run_name=run_name)


def log_collection(cfg: Config, zoo_dir: Path, summary: dict, artifacts: list[Path]) -> str:
    """One MLflow run per collection: config params, per-task metric summaries (val, and test where scored),
    and the given files (layout, config, plots)."""
    import mlflow

    with _start(cfg, "collect") as run:
        mlflow.log_params(flat_params(cfg.to_dict()))
        mlflow.set_tag("zoo_dir", str(zoo_dir))
        for task, s in summary["tasks"].items():
            mlflow.log_metrics({f"{task}.{k}": float(v) for k, v in s.items() if isinstance(v, (int, float))})
        mlflow.log_metric("wall_seconds", float(summary.get("wall_seconds", 0.0)))
        for path in artifacts:
            mlflow.log_artifact(str(path))
        return run.info.run_id


def log_training(cfg: Config, generator_path: Path, history: list[dict], summary: dict) -> str:
    """Loss curves (each phase's losses and their parts, on one step axis) and params of a generator run; the
    generator registered in the MLflow model registry as a pyfunc logged from code (raypdiff/mlflow_model.py, no
    CloudPickle) with the checkpoint as its artifact."""
    import mlflow

    with _start(cfg, "train") as run:
        mlflow.log_params(flat_params(cfg.to_dict()))
        offset, last = 0, None
        for h in history:  # phases in order (ae, diffusion, task), each counting its steps from 1: one axis for all
            if last is not None and h["phase"] != last["phase"]:
                offset += last["step"]
            mlflow.log_metrics({k: float(v) for k, v in h.items()
                                if k not in ("phase", "step") and isinstance(v, (int, float))}, step=h["step"] + offset)
            last = h
        mlflow.log_metric("train_seconds", float(summary["train_seconds"]))
        if cfg.trainer.register_model:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # MLflow asks for type hints; inputs here are free-form rows
                mlflow.pyfunc.log_model(name="generator", python_model=str(Path(__file__).with_name("mlflow_model.py")),
                                        artifacts={"generator": str(generator_path)},
                                        registered_model_name=cfg.trainer.model_name, pip_requirements=["raypdiff"])
        else:
            mlflow.log_artifact(str(generator_path))
        return run.info.run_id


def log_evaluation(cfg: Config, report_dir: Path, metrics: dict[str, float]) -> str:
    """One run per evaluation: its flat metrics, and report.json / .md / .png as artifacts."""
    return log_report(cfg, "evaluate", metrics, [report_dir / n for n in ("report.json", "report.md", "report.png")])


def log_report(cfg: Config, run_name: str, metrics: dict[str, float], artifacts: list[Path]) -> str:
    """One run holding a report: its flat metrics and its files as artifacts."""
    import mlflow

    with _start(cfg, run_name) as run:
        mlflow.log_metrics(metrics)
        for path in artifacts:
            mlflow.log_artifact(str(path))
        return run.info.run_id


def sweep_parent(cfg: Config, out: Location) -> str:
    """The sweep's parent run: the one recorded in out/mlflow_parent.json when resuming, else a new one with the
    config as params."""
    import mlflow

    record = out / "mlflow_parent.json"
    if record.is_file():
        run_id = json.loads(record.read_text())["run_id"]
        mlflow.set_tracking_uri(tracking_uri(cfg))
        try:
            mlflow.get_run(run_id)
            return run_id
        except mlflow.exceptions.MlflowException:
            pass  # another store now: start afresh there
    with _start(cfg, "sweep") as run:
        mlflow.log_params(flat_params(cfg.to_dict()))
        mlflow.set_tag("sweep_dir", str(out))
    record.write_text(json.dumps({"run_id": run.info.run_id, "tracking_uri": tracking_uri(cfg)}))
    return run.info.run_id


def log_trial(cfg: Config, parent: str, name: str, params: dict, metrics: dict, artifacts: list[Path]) -> None:
    """A nested run under the sweep's parent, once per trial name (a resumed sweep does not log a trial twice)."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(cfg))
    exp = mlflow.get_run(parent).info.experiment_id
    found = mlflow.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{parent}' and "
                                                    f"tags.raypdiff_trial = '{name}'", output_format="list")
    if found:
        return
    with mlflow.start_run(experiment_id=exp, run_name=name, parent_run_id=parent, nested=True):
        mlflow.set_tag("raypdiff_trial", name)
        mlflow.log_params(flat_params(params))
        mlflow.log_metrics(metrics)
        for path in artifacts:
            if path.is_file():
                mlflow.log_artifact(str(path))


def log_sweep_summary(cfg: Config, parent: str, metrics: dict, artifacts: list[Path]) -> None:
    """The sweep's tables and plot on its parent run."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(cfg))
    with mlflow.start_run(run_id=parent):
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        for path in artifacts:
            mlflow.log_artifact(str(path))


def download_generator(model_uri: str, uri: str | None = None) -> Path:
    """A registered generator (models:/<name>/<version>) → the local path of its checkpoint file. `uri`: the tracking
    store (None → MLFLOW_TRACKING_URI)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    if uri:
        if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
            raise ConfigError(f"{model_uri}: no MLflow store at {uri} (set serve.tracking_uri or MLFLOW_TRACKING_URI)")
        mlflow.set_tracking_uri(uri)
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri))
    except MlflowException as e:
        raise ConfigError(f"{model_uri}: cannot load from the MLflow store {mlflow.get_tracking_uri()} "
                          f"({str(e).splitlines()[0][:200]})") from None
    found = sorted(local.rglob(GENERATOR_FILE))
    if not found:
        raise ConfigError(f"{model_uri}: the registered model holds no {GENERATOR_FILE} (a pickled generator.pt "
                          "registered before version 2 is never loaded: download it and run `raypdiff migrate`)")
    return found[0]

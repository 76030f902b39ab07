"""The one module that imports mlflow: embedded SQLite store by default, params from the typed config."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from raypdiff.config import Config


def tracking_uri(cfg: Config) -> str:
    if cfg.tracking.uri:
        return cfg.tracking.uri
    db = Path(cfg.collect.output_dir).expanduser().resolve().parent / "mlflow.db"
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

    uri = tracking_uri(cfg)
    mlflow.set_tracking_uri(uri)
    if uri.startswith("sqlite:///") and mlflow.get_experiment_by_name(cfg.tracking.experiment) is None:
        # Artifacts beside the database, not in ./mlruns of whatever folder the command ran in.
        db = Path(uri[len("sqlite:///"):])
        mlflow.create_experiment(cfg.tracking.experiment, artifact_location=(db.parent / "mlartifacts").as_uri())
    mlflow.set_experiment(cfg.tracking.experiment)
    return mlflow.start_run(run_name=run_name)


def log_collection(cfg: Config, zoo_dir: Path, summary: dict) -> str:
    """One MLflow run per collection: config params, per-task metric summaries, layout and plots."""
    import mlflow

    with _start(cfg, "collect") as run:
        mlflow.log_params(flat_params(cfg.to_dict()))
        mlflow.set_tag("zoo_dir", str(zoo_dir))
        for task, s in summary["tasks"].items():
            for k in ("mean", "best", "worst", "majority", "n"):
                mlflow.log_metric(f"{task}.{k}", float(s[k]))
        mlflow.log_metric("wall_seconds", float(summary.get("wall_seconds", 0.0)))
        mlflow.log_artifact(str(zoo_dir / "layout.json"))
        mlflow.log_artifact(str(zoo_dir / "config.yaml"))
        with tempfile.TemporaryDirectory() as tmp:
            mlflow.log_artifact(metric_plot(zoo_dir, Path(tmp) / "metric_distribution.png"))
        return run.info.run_id


def metric_plot(zoo_dir: Path, out: Path) -> str:
    """One histogram per task of its captured checkpoints' dev metric, majority baseline marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from raypdiff.zoo import load_table, read_meta

    meta = read_meta(zoo_dir, allow_incomplete=True)
    t = load_table(zoo_dir, ["task", "value"]).to_pandas()
    names = [n for n in meta["tasks"] if (t.task == n).any()]
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 2.8), squeeze=False)
    for ax, name in zip(axes[0], names):
        info = meta["tasks"][name]
        ax.hist(t.loc[t.task == name, "value"], bins=20, color="tab:blue")
        ax.axvline(info["majority"], color="tab:red", ls="--", label="majority")
        ax.set_title(name)
        ax.set_xlabel(info["metric"])
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return str(out)


def log_training(cfg: Config, generator_path: Path, history: list[dict], summary: dict) -> str:
    """Loss curves and params of a generator run; the generator registered in the MLflow model registry."""
    import mlflow

    with _start(cfg, "train") as run:
        mlflow.log_params(flat_params(cfg.to_dict()))
        offset = max((h["step"] for h in history if h["phase"] == "ae"), default=0)
        for h in history:
            key = "ae_loss" if h["phase"] == "ae" else "diffusion_loss"
            mlflow.log_metric(key, h[key], step=h["step"] + (0 if h["phase"] == "ae" else offset))
        mlflow.log_metric("train_seconds", float(summary["train_seconds"]))
        if cfg.trainer.register_model:
            mlflow.pyfunc.log_model(name="generator", python_model=_generator_model(),
                                    artifacts={"generator": str(generator_path)},
                                    registered_model_name=cfg.trainer.model_name, pip_requirements=["raypdiff"])
        else:
            mlflow.log_artifact(str(generator_path))
        return run.info.run_id


def log_evaluation(cfg: Config, report_dir: Path, report: dict) -> str:
    import mlflow

    with _start(cfg, "evaluate") as run:
        for task, r in report["tasks"].items():
            for kind in ("original", "recon", "generated"):
                for stat in ("mean", "best"):
                    mlflow.log_metric(f"{task}.{kind}.{stat}", r[kind][stat])
        mlflow.log_metric("generate_seconds_per_adapter", report["generate_seconds_per_adapter"])
        for name in ("report.json", "report.md", "report.png"):
            mlflow.log_artifact(str(report_dir / name))
        return run.info.run_id



def _generator_model():
    """MLflow pyfunc for the registry: rows {"task", "num", "seed"} → generated flat adapter vectors."""
    import warnings

    import mlflow.pyfunc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLflow asks for type hints; inputs here are free-form rows

        class GeneratorModel(mlflow.pyfunc.PythonModel):
            def load_context(self, context):
                from raypdiff.generate import Generator

                self.gen = Generator(context.artifacts["generator"])

            def predict(self, context, model_input, params=None):
                rows = model_input.to_dict("records") if hasattr(model_input, "to_dict") else list(model_input)
                return [self.gen.vectors(self.gen.conditions(r["task"], int(r.get("num", 1))), r["task"],
                                         int(r.get("seed", 0))).tolist() for r in rows]

    return GeneratorModel()

"""The registered generator as MLflow code (models-from-code): rows {"task", "num", "seed"} → flat adapter vectors.
MLflow stores this file as the model, so loading a registered generator unpickles nothing."""
import mlflow.pyfunc
from mlflow.models import set_model

from raypdiff.generate import Generator


class GeneratorModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        self.gen = Generator(context.artifacts["generator"])

    def predict(self, context, model_input, params=None):
        rows = model_input.to_dict("records") if hasattr(model_input, "to_dict") else list(model_input)
        return [self.gen.vectors(self.gen.conditions(r["task"], int(r.get("num", 1))), r["task"],
                                 int(r.get("seed", 0))).tolist() for r in rows]


set_model(GeneratorModel())

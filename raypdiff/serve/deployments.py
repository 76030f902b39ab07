"""The two Serve deployments behind the ingress: `Generator` (requests batched with @serve.batch into one sampling
call) and `Predictor` (stored adapters kept loaded per replica with @serve.multiplexed, least recently used out)."""
from __future__ import annotations

from ray import serve

CACHE_ADAPTERS = 32  # adapters kept loaded per predictor replica (a few hundred KB of tensors each)
# Requests a replica takes at once (Serve's default is 5): the generator needs as many as it batches; beyond that
# callers queue in the router, which backs off and loses throughput (bench/serve_load.py at concurrency 32).
GENERATOR_ONGOING = 32
PREDICTOR_ONGOING = 16


def _setup(settings: dict):
    import torch

    from raypdiff.config import Config
    from raypdiff.serve.store import AdapterStore

    cfg = Config.from_dict({"serve": settings}).serve
    torch.set_num_threads(cfg.threads)
    return cfg, AdapterStore(cfg.store_dir, cfg.max_adapters)


def _check_store(store) -> None:
    """Health: a replica whose adapter store disappeared (an unmounted share) is unhealthy. (A bucket's prefix
    holds no folder to check: an empty one does not exist until the first adapter.)"""
    if store.root.is_local and not store.root.is_dir():
        raise RuntimeError(f"adapter store {store.root} is gone")


@serve.deployment(name="Generator", max_ongoing_requests=GENERATOR_ONGOING, health_check_period_s=10,
                  health_check_timeout_s=30)
class GeneratorDeployment:
    def __init__(self, settings: dict):
        from raypdiff.generate import Generator
        from raypdiff.serve.adapters import AdapterMaker, resolve_generator

        cfg, store = _setup(settings)
        self.maker = AdapterMaker(Generator(resolve_generator(cfg.generator, cfg.tracking_uri)), store)
        self.maker.gen.encoder  # load the text encoder now, not on the first request
        self.make.set_max_batch_size(cfg.max_batch_size)
        self.make.set_batch_wait_timeout_s(cfg.batch_wait_s)

    def catalog(self) -> dict:
        return self.maker.catalog()

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def make(self, reqs: list[dict]) -> list[dict]:
        return self.maker.make(reqs)

    def check_health(self) -> None:
        _check_store(self.maker.store)


@serve.deployment(name="Predictor", max_ongoing_requests=PREDICTOR_ONGOING, health_check_period_s=10,
                  health_check_timeout_s=30)
class PredictorDeployment:
    def __init__(self, settings: dict):
        from raypdiff.serve.adapters import AdapterPredictor

        _, store = _setup(settings)
        self.predictor = AdapterPredictor(store)

    @serve.multiplexed(max_num_models_per_replica=CACHE_ADAPTERS)
    async def adapter(self, adapter_id: str) -> dict:
        return self.predictor.load(adapter_id)

    async def predict(self, texts: list) -> dict:
        """texts → {"predictions": [...]} for the request's multiplexed adapter id, or {"error", "status"}."""
        from raypdiff.config import ConfigError
        from raypdiff.serve.store import UNKNOWN

        try:
            adapter = await self.adapter(serve.get_multiplexed_model_id())
        except KeyError:
            return {"error": UNKNOWN, "status": 404}
        try:
            return {"predictions": self.predictor.predict(adapter, texts)}
        except ConfigError as e:
            return {"error": str(e), "status": 422}

    def check_health(self) -> None:
        _check_store(self.predictor.store)

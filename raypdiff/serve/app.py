"""The HTTP face of the endpoint: a FastAPI ingress (OpenAPI at /docs) in front of the Generator and Predictor
deployments, the web page at /, and `build_app`, the application builder `raypdiff serve` and `serve deploy` use."""

import asyncio
import dataclasses
import os
from pathlib import Path
from typing import Optional

from fastapi import Depends, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPBearer
from fastapi_offline import FastAPIOffline
from ray import serve
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
from starlette.exceptions import HTTPException as StarletteHTTPException

from raypdiff.serve import schemas
from raypdiff.serve.deployments import GeneratorDeployment, PredictorDeployment
from raypdiff.serve.guard import Guard, Limits
from raypdiff.serve.store import ID_PATTERN, UNKNOWN, AdapterStore

PAGE = Path(__file__).parent / "page" / "index.html"
RETRIES = 3  # calls to a deployment whose replica died on the way are sent again (to a live replica)
ERRORS = {code: {"model": schemas.Error} for code in (400, 401, 404, 408, 413, 422, 431, 503)}
# the key is checked by the Guard before anything is read; this only declares it in the OpenAPI schema
BEARER = HTTPBearer(auto_error=False, description="the server's API key, when it has one (serve.api_key)")
V1 = dict(responses=ERRORS, dependencies=[Depends(BEARER)])

# /docs from local files (offline); no slash redirects (their Location would echo the request's Host)
app = FastAPIOffline(title="raypdiff", version="1", redoc_url=None, redirect_slashes=False,
                     description="Generate LoRA adapters from a task description and a few labeled examples "
                                 "(COND P-DIFF), download them as PEFT folders and try them on texts.")
app.add_middleware(Guard)


def _one_line(exc: RequestValidationError) -> str:
    err = exc.errors()[0]
    if err.get("type") == "json_invalid":
        return "body: not valid JSON"
    where = ".".join(str(x) for x in err.get("loc", ())[1:]) or "body"
    return f"{where}: {err.get('msg', 'invalid')}".replace("Value error, ", "").splitlines()[0][:300]


@app.exception_handler(RequestValidationError)
async def _invalid(request: Request, exc: RequestValidationError):
    return JSONResponse({"error": _one_line(exc)}, status_code=422)


@app.exception_handler(StarletteHTTPException)  # ours, and the router's 404 / 405
async def _http(request: Request, exc: StarletteHTTPException):
    return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)


async def _retrying(call):
    """`call()` → its result; a replica that died mid-request is retried on another (requests are idempotent:
    adapters are content-addressed)."""
    for attempt in range(RETRIES):
        try:
            return await call()
        except (ActorDiedError, ActorUnavailableError, RayActorError):
            if attempt == RETRIES - 1:
                raise HTTPException(503, "no live replica answered; try again") from None
            await asyncio.sleep(0.2 * (attempt + 1))


def _answer(result: dict):
    if "error" in result:
        raise HTTPException(result.get("status", 422), result["error"])
    return result


@serve.deployment(name="Ingress", ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256)  # it only awaits
@serve.ingress(app)
class Ingress:
    def __init__(self, generator, predictor, settings: dict):
        from raypdiff.config import Config

        cfg = Config.from_dict({"serve": settings}).serve
        self.generator, self.predictor = generator, predictor
        self.store = AdapterStore(cfg.store_dir, cfg.max_adapters)
        app.state.limits = Limits(cfg.api_key or os.environ.get("RAYPDIFF_API_KEY") or None, cfg.max_body_bytes,
                                  cfg.body_timeout_s)
        self._catalog: Optional[dict] = None
        self._page = PAGE.read_text()  # read once, not per request

    async def catalog(self) -> dict:
        if self._catalog is None:
            self._catalog = await _retrying(lambda: self.generator.catalog.remote())
        return self._catalog

    @app.get("/", include_in_schema=False)
    def page(self) -> HTMLResponse:
        return HTMLResponse(self._page)

    @app.api_route("/healthz", methods=["GET", "HEAD"], response_model=schemas.Health)  # HEAD: load balancers' checks
    async def healthz(self):
        return {"status": "ok", "generator_tasks": len((await self.catalog())["tasks"])}

    @app.get("/v1/tasks", response_model=schemas.Tasks, **V1)
    async def tasks(self):
        return await self.catalog()

    @app.post("/v1/adapters", response_model=schemas.Adapters, **V1)
    async def adapters(self, req: schemas.AdapterRequest):
        return _answer(await self._make(req))

    async def _make(self, req: schemas.AdapterRequest) -> dict:
        body = req.model_dump()
        return await _retrying(lambda: self.generator.make.remote(body))

    @app.get("/v1/adapters/{adapter_id}", response_class=Response, responses={
        200: {"content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
              "description": "the PEFT folder (adapter_config.json, adapter_model.safetensors, raypdiff.json)"},
        **ERRORS}, dependencies=[Depends(BEARER)])
    async def download(self, adapter_id: str = PathParam(pattern=ID_PATTERN)):
        try:  # the store's reads block (a disk or a bucket): off the event loop
            data = await asyncio.to_thread(self.store.zip, adapter_id)
        except KeyError:
            raise HTTPException(404, UNKNOWN) from None
        return Response(data, media_type="application/zip",
                        headers={"Content-Disposition": f'attachment; filename="adapter-{adapter_id[:12]}.zip"'})

    @app.post("/v1/predict", response_model=schemas.Predictions, **V1)
    async def predict(self, req: schemas.PredictRequest):
        if req.adapter is not None:
            made = _answer(await self._make(req.adapter.model_copy(update={"num": 1})))
            adapter_id = made["adapters"][0]["id"]
        else:
            adapter_id = req.adapter_id
            try:  # counts as a use: adapters in use stay in the store
                await asyncio.to_thread(self.store.meta, adapter_id)
            except KeyError:
                raise HTTPException(404, UNKNOWN) from None
        texts = [t if isinstance(t, str) else list(t) for t in req.texts]
        handle = self.predictor.options(multiplexed_model_id=adapter_id)
        result = _answer(await _retrying(lambda: handle.predict.remote(texts)))
        return {"adapter_id": adapter_id, "predictions": result["predictions"]}


def build_app(args: dict):
    """Application builder (`serve run` / `serve deploy` pass the config's `args`): ServeConfig fields."""
    from raypdiff.config import Config

    cfg = Config.from_dict({"serve": dict(args)}).serve
    settings = dataclasses.asdict(cfg)
    opts = {"num_replicas": cfg.replicas, "ray_actor_options": {"num_cpus": cfg.replica_cpus}}
    generator = GeneratorDeployment.options(**opts).bind(settings)
    predictor = PredictorDeployment.options(**opts).bind(settings)
    return Ingress.bind(generator, predictor, settings)


def run(cfg, address: Optional[str] = None) -> None:
    """`raypdiff serve`: the app on a local Ray (or `address`), until Ctrl-C / SIGTERM."""
    import signal
    import threading

    from raypdiff.cluster import connect

    connect(address, progress=False)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": cfg.host, "port": cfg.port, "keep_alive_timeout_s": cfg.keep_alive_s})
        serve.run(build_app(dataclasses.asdict(cfg)), name="raypdiff", route_prefix="/")
        print(f"raypdiff: serving on http://{cfg.host}:{cfg.port}/ (API docs at /docs); Ctrl-C stops", flush=True)
        stop.wait()
    finally:
        serve.shutdown()

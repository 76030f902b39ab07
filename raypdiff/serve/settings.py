"""The `serve` config section (the Ray Serve endpoint, `raypdiff serve`), composed into raypdiff.config.Config."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from raypdiff.errors import require


@dataclass
class ServeConfig:
    # A generator folder / generator.safetensors, or a registered model "models:/raypdiff-generator/<version>".
    generator: str = "runs/generator"
    tracking_uri: Optional[str] = None  # the MLflow store models:/ reads; None → MLFLOW_TRACKING_URI, then tracking.*
    host: str = "127.0.0.1"  # 0.0.0.0 to listen beyond this machine
    port: int = 8000
    replicas: int = 1  # of the generator and of the predictor deployment
    replica_cpus: float = 0.5  # Ray CPUs reserved per replica (the ingress reserves none)
    threads: int = 1  # torch threads per replica
    api_key: Optional[str] = None  # None → RAYPDIFF_API_KEY; when set, /v1 routes need "Authorization: Bearer <key>"
    store_dir: str = "runs/serve/adapters"  # generated PEFT folders, by content id (shared storage on a cluster)
    max_adapters: int = 1000  # the store's cap: the least recently used adapters are evicted beyond it (>= 16,
    # the most one request makes)
    max_batch_size: int = 16  # generation requests sampled together (@serve.batch)
    batch_wait_s: float = 0.005
    max_body_bytes: int = 1 << 20  # larger get 413 unread (the largest valid: 0.2 MB ASCII, 0.6 MB UTF-8 CJK)
    body_timeout_s: float = 10.0  # a request body that stops arriving for this long gets 408
    keep_alive_s: float = 5.0  # an idle connection between requests is closed after this (`raypdiff serve`)

    def __post_init__(self):
        require(bool(self.generator), "serve.generator: name a generator folder, file or models:/ URI")
        require(1 <= self.port <= 65535, f"serve.port: {self.port} is not a TCP port")
        require(self.max_adapters >= 16,
                f"serve.max_adapters: must be >= 16 (one request's most), got {self.max_adapters}")
        for name in ("replicas", "threads", "max_batch_size"):
            require(getattr(self, name) >= 1, f"serve.{name}: must be >= 1, got {getattr(self, name)}")
        require(self.replica_cpus >= 0, f"serve.replica_cpus: must be >= 0, got {self.replica_cpus}")
        require(self.batch_wait_s >= 0, f"serve.batch_wait_s: must be >= 0, got {self.batch_wait_s}")
        require(self.max_body_bytes >= 1024, f"serve.max_body_bytes: must be >= 1024, got {self.max_body_bytes}")
        for name in ("body_timeout_s", "keep_alive_s"):
            require(getattr(self, name) > 0, f"serve.{name}: must be > 0, got {getattr(self, name)}")
        require(self.api_key is None or len(self.api_key) >= 8, "serve.api_key: use at least 8 characters")

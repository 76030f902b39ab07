"""Content-addressed adapter store: one PEFT folder per id (sha256 of the vector and its layout), complete once its
raypdiff.json is there, capped at `max_adapters` with the least recently used evicted. A folder or a URI: on a
cluster it lives on shared storage or a bucket."""
from __future__ import annotations

import hashlib
import io
import json
import re
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from raypdiff.storage import Location, Where

ID_PATTERN = r"^[0-9a-f]{64}$"
META = "raypdiff.json"  # what the adapter is for (labels, text fields, base model), shipped inside the zip
ZIPPED = ("adapter_config.json", "adapter_model.safetensors", META)
HEAD = "head.safetensors"  # a new task's head (raypdiff.newtask.HEAD_FILE), zipped where the folder has one
UNKNOWN = "unknown adapter id (never made here, or evicted from the store)"
USED = ".used"  # <store>/.used/<id>: an empty file whose time is the adapter's last use
USE_EVERY = 60.0  # seconds between two recorded uses of one adapter by one process
USED_KEPT = 4096  # ids whose last recorded use one process remembers before it forgets the stale ones


def adapter_id(vector: np.ndarray, layout_task: str, base: str) -> str:
    """The same adapter (values, layout and base model) always gets the same id."""
    h = hashlib.sha256(f"{base}\n{layout_task}\n".encode())
    h.update(np.ascontiguousarray(vector, dtype=np.float32).tobytes())
    return h.hexdigest()


class AdapterStore:
    def __init__(self, root: Where, max_adapters: int):
        self.root = Location.of(root, "serve.store_dir")
        self.root.mkdir()
        self.max_adapters = max_adapters
        self._used: dict[str, float] = {}  # id → when this process last recorded a use

    def path(self, id_: str) -> Location:
        if not re.match(ID_PATTERN, id_):
            raise KeyError(id_)  # never a path built from anything but a well-formed hash
        return self.root / id_

    def exists(self, id_: str) -> bool:
        try:
            return (self.path(id_) / META).is_file()
        except KeyError:
            return False

    def put(self, id_: str, write: Callable[[Path], None], meta: dict) -> None:
        """`write(folder)` fills a fresh local folder with the PEFT files; they are stored under `id_` and its
        raypdiff.json last, so a reader (who looks for that first) sees the adapter whole or not at all. Another
        replica storing the same id meanwhile writes identical content."""
        if self.exists(id_):
            self._touch(id_)
            return
        with tempfile.TemporaryDirectory(prefix="raypdiff-adapter-") as tmp:
            folder = Path(tmp) / id_
            write(folder)
            for f in sorted(folder.iterdir()):
                (self.path(id_) / f.name).write_bytes(f.read_bytes())
        (self.path(id_) / META).write_text(json.dumps({"id": id_, **meta}, indent=1))
        self.evict()

    def meta(self, id_: str) -> dict:
        """The adapter's metadata; KeyError when it is not (or no longer) stored. Counts as a use."""
        try:
            meta = json.loads((self.path(id_) / META).read_text())
        except (OSError, ValueError):
            raise KeyError(id_) from None
        self._touch(id_)
        return meta

    def read(self, id_: str, name: str) -> bytes:
        """One file of a stored adapter; KeyError when it is gone (evicted meanwhile)."""
        try:
            return (self.path(id_) / name).read_bytes()
        except OSError:
            raise KeyError(id_) from None

    def zip(self, id_: str) -> bytes:
        """The PEFT folder as a zip: adapter_config.json, adapter_model.safetensors and raypdiff.json, and a new
        task's head.safetensors."""
        self.meta(id_)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for name in ZIPPED:
                z.writestr(name, self.read(id_, name))
            if (self.path(id_) / HEAD).is_file():
                z.writestr(HEAD, self.read(id_, HEAD))
        return buf.getvalue()

    def _touch(self, id_: str) -> None:
        """A use, as the time of an empty marker beside the adapters (the adapter's own files are never rewritten,
        so an eviction racing a use cannot leave half an adapter); at most once a minute per id and process, since
        on a bucket each is a request."""
        now = time.monotonic()
        if now - self._used.get(id_, -USE_EVERY) < USE_EVERY:
            return
        if len(self._used) >= USED_KEPT:  # a long-lived server sees many ids: forget those past their minute
            # a copy first: other request threads add to the record meanwhile
            self._used = {k: t for k, t in dict(self._used).items() if now - t < USE_EVERY}
        self._used[id_] = now
        try:
            (self.root / USED / id_).write_bytes(b"")
        except OSError:
            pass

    def _ages(self) -> dict[str, int]:
        """Stored id → when it was last used or stored (ns), from one listing of the store."""
        stored, used = {}, {}
        for rel, mtime in self.root.tree():
            folder, _, name = rel.rpartition("/")
            if name == META and re.match(ID_PATTERN, folder):
                stored[folder] = mtime
            elif folder == USED and re.match(ID_PATTERN, name):
                used[name] = mtime
        return {k: max(v, used.get(k, 0)) for k, v in stored.items()}

    def evict(self) -> list[str]:
        """Remove the least recently used adapters beyond the cap; returns their ids."""
        ages = self._ages()
        gone = sorted(ages, key=lambda k: (ages[k], k))[:max(0, len(ages) - self.max_adapters)]
        for id_ in gone:
            for p in (self.path(id_), self.root / USED / id_):
                try:
                    p.remove_tree()
                except OSError:  # another replica removed it first
                    pass
        return gone

    def __len__(self) -> int:
        return len(self._ages())

"""Content-addressed adapter store: one PEFT folder per id (sha256 of the vector and its layout), written
atomically, capped at `max_adapters` with the least recently used evicted. On a cluster it lives on shared storage."""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import uuid
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

ID_PATTERN = r"^[0-9a-f]{64}$"
META = "raypdiff.json"  # what the adapter is for (labels, text fields, base model), shipped inside the zip
ZIPPED = ("adapter_config.json", "adapter_model.safetensors", META)
HEAD = "head.safetensors"  # a new task's head (raypdiff.newtask.HEAD_FILE), zipped where the folder has one
UNKNOWN = "unknown adapter id (never made here, or evicted from the store)"


def adapter_id(vector: np.ndarray, layout_task: str, base: str) -> str:
    """The same adapter (values, layout and base model) always gets the same id."""
    h = hashlib.sha256(f"{base}\n{layout_task}\n".encode())
    h.update(np.ascontiguousarray(vector, dtype=np.float32).tobytes())
    return h.hexdigest()


class AdapterStore:
    def __init__(self, root: str | Path, max_adapters: int):
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_adapters = max_adapters

    def path(self, id_: str) -> Path:
        if not re.match(ID_PATTERN, id_):
            raise KeyError(id_)  # never a path built from anything but a well-formed hash
        return self.root / id_

    def exists(self, id_: str) -> bool:
        try:
            return (self.path(id_) / META).is_file()
        except KeyError:
            return False

    def put(self, id_: str, write: Callable[[Path], None], meta: dict) -> None:
        """`write(folder)` fills a fresh folder with the PEFT files; it appears under `id_` whole or not at all."""
        if self.exists(id_):
            self._touch(id_)
            return
        tmp = self.root / f".tmp-{uuid.uuid4().hex}"
        try:
            write(tmp)
            (tmp / META).write_text(json.dumps({"id": id_, **meta}, indent=1))
            try:
                os.replace(tmp, self.path(id_))
            except OSError:  # another replica stored the same adapter first: identical content
                pass
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.evict()

    def meta(self, id_: str) -> dict:
        """The adapter's metadata; KeyError when it is not (or no longer) stored. Counts as a use."""
        try:
            meta = json.loads((self.path(id_) / META).read_text())
        except (OSError, ValueError):
            raise KeyError(id_) from None
        self._touch(id_)
        return meta

    def zip(self, id_: str) -> bytes:
        """The PEFT folder as a zip: adapter_config.json, adapter_model.safetensors and raypdiff.json, and a new
        task's head.safetensors."""
        self.meta(id_)
        buf = io.BytesIO()
        try:
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
                for name in ZIPPED:
                    z.write(self.path(id_) / name, name)
                if (self.path(id_) / HEAD).is_file():
                    z.write(self.path(id_) / HEAD, HEAD)
        except OSError:  # evicted meanwhile
            raise KeyError(id_) from None
        return buf.getvalue()

    def _touch(self, id_: str) -> None:
        try:
            os.utime(self.path(id_) / META)
        except OSError:
            pass

    def evict(self) -> list[str]:
        """Remove the least recently used adapters beyond the cap; returns their ids."""
        entries = []
        for p in self.root.iterdir():
            try:
                if re.match(ID_PATTERN, p.name):
                    entries.append(((p / META).stat().st_mtime, p))
            except OSError:
                continue
        entries.sort()
        gone = entries[:max(0, len(entries) - self.max_adapters)]
        for _, p in gone:
            shutil.rmtree(p, ignore_errors=True)
        return [p.name for _, p in gone]

    def __len__(self) -> int:
        return sum(1 for p in self.root.iterdir() if re.match(ID_PATTERN, p.name))

"""Where outputs live: a local path or a URI (s3://, gs://, file://, any fsspec protocol) behind one pyarrow file
system. Credentials come from the environment (AWS_*, GOOGLE_APPLICATION_CREDENTIALS), never from a config."""
from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Optional, Union
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from raypdiff.config import ConfigError

Where = Union[str, Path, "Location"]


def is_uri(where: Where) -> bool:
    """True for a remote URI (s3://bucket/key, gs://...), False for a local path or file:// URI."""
    s = str(where)
    return "://" in s and not s.startswith("file://")


def _path(where: str) -> Path:
    """The absolute path of a local path or file:// URI."""
    return Path(where[len("file://"):] if where.startswith("file://") else where).expanduser().resolve()


@lru_cache(maxsize=None)
def _filesystem(scheme: str, netloc: str) -> pafs.FileSystem:
    """One file system per bucket, made from the environment's credentials and endpoint (AWS_ENDPOINT_URL for an
    S3-compatible server)."""
    if scheme in ("s3", "gs", "gcs"):
        return pafs.FileSystem.from_uri(f"{scheme}://{netloc}")[0]
    import fsspec  # hdfs, abfs, ...: whatever fsspec has a driver for

    try:
        return pafs.PyFileSystem(pafs.FSSpecHandler(fsspec.filesystem(scheme)))
    except (ImportError, ValueError) as e:
        raise ConfigError(f"{scheme}:// URIs need an fsspec driver for {scheme} ({e})") from None


class Location:
    """A file or folder on a pyarrow file system; `str()` gives the URI (or the absolute local path)."""

    def __init__(self, fs: pafs.FileSystem, path: str, scheme: str = ""):
        self.fs, self.path, self.scheme = fs, path.rstrip("/") or path, scheme

    @classmethod
    def of(cls, where: Where, setting: str = "") -> "Location":
        """`setting`: the config key or flag it came from, named in errors."""
        if isinstance(where, Location):
            return where
        s, named = str(where), f"{setting}: " if setting else ""
        if not is_uri(s):
            return cls(pafs.LocalFileSystem(), str(_path(s)))
        parts = urlsplit(s)
        if parts.username or parts.password or parts.query:  # never echoed: it may hold a secret
            raise ConfigError(f"{named}{parts.scheme}:// URIs take no user, password or query; credentials and "
                              f"endpoints come from the environment (AWS_*, AWS_ENDPOINT_URL, ...)")
        if not parts.netloc:
            raise ConfigError(f"{named}{s}: a URI needs a bucket (e.g. s3://bucket/path)")
        try:
            fs = _filesystem(parts.scheme, parts.netloc)
        except (OSError, ValueError) as e:
            raise ConfigError(f"{named}{s}: cannot open this storage ({str(e).splitlines()[0][:160]})") from None
        return cls(fs, f"{parts.netloc}{parts.path}", parts.scheme)

    # ---- names ----
    def __str__(self) -> str:
        return f"{self.scheme}://{self.path}" if self.scheme else self.path

    __repr__ = __str__

    def __fspath__(self) -> str:
        """Local locations pass wherever a path does; a URI does not."""
        return str(self.local())

    def __eq__(self, other) -> bool:
        return isinstance(other, Location) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __truediv__(self, name: str) -> "Location":
        return Location(self.fs, f"{self.path}/{name}", self.scheme)

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def parent(self) -> "Location":
        return Location(self.fs, self.path.rsplit("/", 1)[0], self.scheme)

    @property
    def is_local(self) -> bool:
        return not self.scheme

    def local(self) -> Path:
        """The local path; for code that must hand a path to a library that reads only local files."""
        if not self.is_local:
            raise ConfigError(f"{self}: needs a local path here, not a URI")
        return Path(self.path)

    # ---- queries ----
    def _type(self) -> pafs.FileType:
        return self.fs.get_file_info(self.path).type

    def exists(self) -> bool:
        return self._type() != pafs.FileType.NotFound

    def is_file(self) -> bool:
        return self._type() == pafs.FileType.File

    def is_dir(self) -> bool:
        return self._type() == pafs.FileType.Directory

    def files(self, pattern: str = "*") -> list["Location"]:
        """The files directly in this folder whose name matches `pattern`, sorted by name ([] if no folder)."""
        infos = self.fs.get_file_info(pafs.FileSelector(self.path, allow_not_found=True))
        return sorted((Location(self.fs, i.path, self.scheme) for i in infos
                       if i.type == pafs.FileType.File and fnmatch.fnmatch(i.base_name, pattern)), key=str)

    def folders(self) -> list["Location"]:
        """The folders directly in this one (prefixes on an object store), sorted by name."""
        infos = self.fs.get_file_info(pafs.FileSelector(self.path, allow_not_found=True))
        return sorted((Location(self.fs, i.path, self.scheme) for i in infos if i.type == pafs.FileType.Directory),
                      key=str)

    def tree(self) -> list[tuple[str, int]]:
        """Every file below this folder as (path relative to it, modification time in ns), from one listing."""
        infos = self.fs.get_file_info(pafs.FileSelector(self.path, recursive=True, allow_not_found=True))
        return [(i.path[len(self.path) + 1:], i.mtime_ns or 0) for i in infos if i.type == pafs.FileType.File]

    def stat(self) -> tuple[int, int]:
        """(size in bytes, modification time in ns; 0 where the store keeps none)."""
        info = self.fs.get_file_info(self.path)
        return info.size, info.mtime_ns or 0

    # ---- reading and writing ----
    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.path) as f:
            return f.read()

    def read_text(self) -> str:
        return self.read_bytes().decode()

    def write_bytes(self, data: bytes) -> None:
        """Whole or not at all: written under a temporary name beside it, then moved into place (a rename on a
        disk, a server-side copy on an object store; either way readers never see a part)."""
        with self.temporary() as tmp:
            with self.fs.open_output_stream(tmp.path) as f:
                f.write(data)

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode())

    @contextmanager
    def temporary(self) -> Iterator["Location"]:
        """A hidden name beside this one to write to; moved onto this one when the block ends without an error, and
        removed when it raised (an object store completes an upload whose writer closes on an exception)."""
        tmp = self.parent / f".{self.name}.{uuid.uuid4().hex[:8]}.tmp"
        self.parent.mkdir()
        try:
            yield tmp
        except BaseException:
            if tmp.exists():
                self.fs.delete_file(tmp.path)
            raise
        self.fs.move(tmp.path, self.path)

    def mkdir(self) -> None:
        """A folder on a disk; nothing on an object store (keys need no folder, and a marker object on a parent
        prefix would need a permission the user may not have)."""
        if self.is_local:
            self.fs.create_dir(self.path, recursive=True)

    def move_to(self, dst: "Location") -> None:
        dst.parent.mkdir()
        self.fs.move(self.path, dst.path)

    def copy_to(self, dst: "Location") -> None:
        """A hard link where both are on one disk (derived zoos share their shards), else a copy."""
        dst.parent.mkdir()
        if self.is_local and dst.is_local:
            try:
                os.link(self.path, dst.path)
                return
            except OSError:
                pass
        pafs.copy_files(self.path, dst.path, source_filesystem=self.fs, destination_filesystem=dst.fs)

    def remove_tree(self) -> None:
        if self.is_dir():
            self.fs.delete_dir(self.path)
        elif self.exists():
            self.fs.delete_file(self.path)

    def unwritable(self) -> Optional[str]:
        """Why nothing can be written here (the error's first line), or None. Really tried: os.access says yes to
        root on read-only mounts, and an object store has no permissions to read."""
        probe = self / f".raypdiff-probe-{uuid.uuid4().hex[:8]}"
        try:
            self.mkdir()
            with self.fs.open_output_stream(probe.path) as f:
                f.write(b"")
            self.fs.delete_file(probe.path)
            return None
        except (OSError, pa.ArrowException) as e:
            return str(e).splitlines()[0][:200] or type(e).__name__

    # ---- whole folders ----
    def download(self, dst: Path) -> Path:
        """This folder's (or file's) contents copied to the local `dst`."""
        if not self.is_file():
            dst.mkdir(parents=True, exist_ok=True)
        pafs.copy_files(self.path, str(dst), source_filesystem=self.fs, destination_filesystem=pafs.LocalFileSystem())
        return dst

    def upload(self, src: Path, last: tuple[str, ...] = ()) -> None:
        """The local folder `src` copied here; the files named in `last` (e.g. a manifest) only once the rest are."""
        for f in sorted(p for p in src.rglob("*") if p.is_file() and p.name not in last):
            (self / f.relative_to(src).as_posix()).write_bytes(f.read_bytes())
        for name in last:
            if (src / name).is_file():
                (self / name).write_bytes((src / name).read_bytes())


@contextmanager
def local_copy(where: Where) -> Iterator[Path]:
    """A local path holding `where`'s contents: the path itself when local, else a temporary download."""
    loc = Location.of(where)
    if loc.is_local:
        yield loc.local()
        return
    tmp = Path(tempfile.mkdtemp(prefix="raypdiff-"))
    try:
        yield loc.download(tmp / loc.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def local_folder(where: Where, last: tuple[str, ...] = (), setting: str = "",
                 fetch: tuple[str, ...] = ()) -> Iterator[Path]:
    """A local folder to write into that ends up at `where`: the folder itself when local, else a temporary one
    uploaded when the block ends without an error (the files named in `last` after the others, so a reader who
    looks for them never finds a part of the rest). `fetch`: files of `where` that a resumed run reads back (they
    are copied into the temporary folder first, and uploaded again with it)."""
    loc = Location.of(where, setting)
    if loc.is_local:  # created by whoever writes into it: a refused request leaves no folder
        yield loc.local()
        return
    tmp = Path(tempfile.mkdtemp(prefix="raypdiff-"))
    try:
        for name in fetch:
            if (loc / name).is_file():
                (loc / name).download(tmp / name)
        yield tmp
        loc.upload(tmp, last)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def writable(where: Where, setting: str) -> Location:
    """`where` as a Location, refused in one line naming the setting when nothing can be written there (checked
    before hours of work, not after)."""
    loc = Location.of(where, setting)
    why = loc.unwritable()
    if why:
        raise ConfigError(f"{setting}: {loc} is not writable ({why})")
    return loc


def cached_copy(where: Where, setting: str = "") -> Path:
    """A local path holding the folder `where`, for one read many times (a diffusers pipeline that every collect
    task loads): the folder itself when local, else a download kept in this machine's temporary folder under a name
    made of the URI and its files' names and times, so each node fetches it once and again only once it changed."""
    loc = Location.of(where, setting)
    if loc.is_local:
        return loc.local()
    key = hashlib.sha256(json.dumps([str(loc), sorted(loc.tree())]).encode()).hexdigest()[:16]
    copy = Path(tempfile.gettempdir()) / "raypdiff-cache" / f"{loc.name}-{key}"
    if copy.is_dir():
        return copy
    copy.parent.mkdir(parents=True, exist_ok=True)
    part = Path(tempfile.mkdtemp(prefix=f".{copy.name}.", dir=copy.parent))
    try:
        loc.download(part)
        part.rename(copy)  # whole or not at all; another process that won the race made the same copy
    except OSError:
        if not copy.is_dir():
            raise
    finally:
        shutil.rmtree(part, ignore_errors=True)
    return copy

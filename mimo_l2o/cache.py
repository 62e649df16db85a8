"""On-disk cache of stage outputs (sampled networks, problems, labels).

Each entry lives under a key derived from exactly the config that determines it (a SHA-256
of its canonical JSON, which is also written beside the entry so a reader can see what a key
means). Files are written atomically (a temporary file in the same folder, then
``os.replace``), so a killed run never leaves a half-written entry; chunked computations
write one file per chunk and resume from the chunks already there.

A shared cache folder is read by other users, so an entry is trusted only as data: it is loaded
with ``torch.load(weights_only=True)`` (tensors and plain containers; a planted pickle cannot run
code), its SHA-256 is written beside it (``<key>.pt.sha256``) and checked on every read, and an
entry that fails either check (garbled, truncated, planted) is logged as a warning and computed
again. Files are created with the permissions the umask allows (``0666 & ~umask``), not
``mkstemp``'s 0600, so that a group that shares the folder can read them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


def _plain(obj: Any) -> Any:
    if is_dataclass(obj):
        return _plain(asdict(obj))
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def cache_key(spec: dict[str, Any]) -> str:
    """Stable 20-hex-digit key of a JSON-able spec (dataclasses and enums allowed)."""
    text = json.dumps(_plain({"format": FORMAT_VERSION, "spec": spec}), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _file_mode() -> int:
    """``0666 & ~umask``: what ``open`` would create (the umask is read by setting it back)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def _atomic_write(path: Path, write: Callable[[Any], None], binary: bool = True) -> None:
    """``write(file)`` into a temporary file in ``path``'s folder, then ``os.replace`` onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    _atomic_write(path, lambda f: torch.save(obj, f))


def _atomic_write_text(text: str, path: Path) -> None:
    _atomic_write(path, lambda f: f.write(text), binary=False)


def file_digest(path: Path) -> str:
    """The SHA-256 of a file's bytes, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


class CorruptEntry(Exception):
    """A cache file that does not match its digest or is not plain tensor data."""


def save_entry(obj: Any, path: Path) -> None:
    """:func:`atomic_save`, then the file's digest beside it (an entry without one is not trusted)."""
    atomic_save(obj, path)
    _atomic_write_text(file_digest(path) + "\n", _digest_path(path))


def load_entry(path: Path) -> Any:
    """The entry at ``path``, checked against its digest and loaded as data only
    (``weights_only=True``); :class:`CorruptEntry` if either fails."""
    digest = _digest_path(path)
    if not digest.exists():
        raise CorruptEntry("no digest beside it")
    if digest.read_text().strip() != file_digest(path):
        raise CorruptEntry("its bytes do not match its SHA-256")
    try:
        return torch.load(path, weights_only=True)
    except Exception as error:  # UnpicklingError for a planted object, RuntimeError for a bad zip, ...
        raise CorruptEntry(f"not plain tensor data ({type(error).__name__}: {str(error)[:120]})") from error


def _discard(path: Path) -> None:
    path.unlink(missing_ok=True)
    _digest_path(path).unlink(missing_ok=True)


def _named(what: str, key: str) -> str:
    """``what`` with the entry's short key, for the log: ``labels val (1,000 samples, wmmse) [3f2a9c1b]``."""
    return f"{what} [{key[:8]}]"


class Cache:
    """Stage outputs under ``root/<stage>/<key>.pt``.

    Parameters
    ----------
    root : Path
        Cache folder (created on first write).
    """

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / f"{key}.pt"

    def get_or_compute(
        self, stage: str, spec: dict[str, Any], compute: Callable[[], Any], what: str | None = None
    ) -> tuple[Any, str]:
        """The cached value for ``spec``, computing and storing it on a miss; returns (value, key).
        ``what`` names the entry in the log (``network train (200,000 samples)``), else ``stage``."""
        key = cache_key(spec)
        path = self.path(stage, key)
        what = _named(what or stage, key)
        with self._lock(path):
            cached = self._reuse(what, path)
            if cached is not None:
                return cached, key
            log.info("%s: computing", what)
            value = compute()
            self._store_spec(stage, key, spec)
            save_entry(value, path)
        return value, key

    @staticmethod
    def _verified(what: str, path: Path) -> Any | None:
        """The verified entry at ``path``, or ``None`` when there is none or it failed its checks (then
        it is removed, with a warning naming ``what``, to be computed again)."""
        if not path.exists():
            return None
        try:
            return load_entry(path)
        except CorruptEntry as error:
            log.warning("%s is corrupt (%s); computing it again", what, error)
            _discard(path)
            return None

    def _reuse(self, what: str, path: Path) -> Any | None:
        value = self._verified(f"{what}: the cached entry", path)
        if value is not None:
            log.info("%s: reusing the cached entry", what)
        return value

    def _lock(self, path: Path) -> FileLock:
        """Parallel jobs that need the same entry compute it once: the second waits, then reuses."""
        path.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(path.with_suffix(".lock")))

    def chunked(
        self,
        stage: str,
        spec: dict[str, Any],
        num_samples: int,
        chunk_size: int,
        compute_chunk: Callable[[int, int], dict[str, torch.Tensor]],
        progress: bool = False,
        what: str | None = None,
    ) -> tuple[dict[str, torch.Tensor], str]:
        """Compute ``compute_chunk(start, stop)`` over ``[0, num_samples)`` chunk by chunk.

        Finished chunks are written to ``root/<stage>/<key>.chunks/`` as they complete; a
        rerun after a kill loads them and computes only the rest. When all are done they are
        concatenated (along the first dimension) into the entry and the chunk folder removed.
        The chunk size is not part of the key (the caller puts it in ``spec`` when the result
        depends on it). ``what`` names the entry in the log; without a progress bar every chunk
        logs a line when it is done.
        """
        key = cache_key(spec)
        path = self.path(stage, key)
        what = _named(what or stage, key)
        with self._lock(path):
            return self._chunked(
                what, stage, spec, key, path, num_samples, chunk_size, compute_chunk, progress
            ), key

    def _chunked(self, what, stage, spec, key, path, num_samples, chunk_size, compute_chunk, progress):
        cached = self._reuse(what, path)
        if cached is not None:
            return cached
        chunk_dir = path.with_suffix(".chunks")
        chunks = [
            (s, e, chunk_dir / f"{s:012d}-{e:012d}.pt")
            for s, e in ((s, min(s + chunk_size, num_samples)) for s in range(0, num_samples, chunk_size))
        ]
        done = {}  # the chunks a killed run left behind, each verified like an entry
        for s, e, chunk_path in chunks:
            part = self._verified(f"{what}: chunk {s}-{e}", chunk_path)
            if part is not None:
                done[chunk_path] = part
        if done:
            log.info("%s: resuming from %d of %d chunks already written", what, len(done), len(chunks))
        else:
            log.info("%s: %d chunks", what, len(chunks))
        self._store_spec(stage, key, spec)
        parts = []
        bar = tqdm(chunks, desc=what.split(" (")[0], unit="chunk", disable=not progress, leave=False)
        for i, (start, stop, chunk_path) in enumerate(bar):
            part = done.pop(chunk_path, None)
            if part is None:
                began = time.perf_counter()
                part = compute_chunk(start, stop)
                save_entry(part, chunk_path)
                if not progress:
                    seconds = time.perf_counter() - began
                    log.info("%s: chunk %d/%d done in %.1f s", what, i + 1, len(chunks), seconds)
            parts.append(part)
        value = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        save_entry(value, path)
        shutil.rmtree(chunk_dir, ignore_errors=True)
        return value

    def _store_spec(self, stage: str, key: str, spec: dict[str, Any]) -> None:
        text = json.dumps(_plain(spec), sort_keys=True, indent=1)
        _atomic_write_text(text, self.root / stage / f"{key}.json")

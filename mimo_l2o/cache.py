"""On-disk cache of stage outputs (sampled networks, problems, labels).

Each entry lives under a key derived from exactly the config that determines it (a SHA-256
of its canonical JSON, which is also written beside the entry so a reader can see what a key
means). Files are written atomically (a temporary file in the same folder, then
``os.replace``), so a killed run never leaves a half-written entry; chunked computations
write one file per chunk and resume from the chunks already there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
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


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_write_text(text: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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

    def get_or_compute(self, stage: str, spec: dict[str, Any], compute: Callable[[], Any]) -> tuple[Any, str]:
        """The cached value for ``spec``, computing and storing it on a miss; returns (value, key)."""
        key = cache_key(spec)
        path = self.path(stage, key)
        with self._lock(path):
            if path.exists():
                log.info("%s: reusing cached %s", stage, key)
                return torch.load(path, weights_only=False), key
            log.info("%s: computing %s", stage, key)
            value = compute()
            self._store_spec(stage, key, spec)
            atomic_save(value, path)
        return value, key

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
    ) -> tuple[dict[str, torch.Tensor], str]:
        """Compute ``compute_chunk(start, stop)`` over ``[0, num_samples)`` chunk by chunk.

        Finished chunks are written to ``root/<stage>/<key>.chunks/`` as they complete; a
        rerun after a kill loads them and computes only the rest. When all are done they are
        concatenated (along the first dimension) into the entry and the chunk folder removed.
        The chunk size is not part of the key: the result does not depend on it.
        """
        key = cache_key(spec)
        path = self.path(stage, key)
        with self._lock(path):
            return self._chunked(
                stage, spec, key, path, num_samples, chunk_size, compute_chunk, progress
            ), key

    def _chunked(self, stage, spec, key, path, num_samples, chunk_size, compute_chunk, progress):
        if path.exists():
            log.info("%s: reusing cached %s", stage, key)
            return torch.load(path, weights_only=False)
        chunk_dir = path.with_suffix(".chunks")
        bounds = [(s, min(s + chunk_size, num_samples)) for s in range(0, num_samples, chunk_size)]
        done = {p.name for p in chunk_dir.glob("*.pt")} if chunk_dir.exists() else set()
        reused = sum(f"{s:012d}-{e:012d}.pt" in done for s, e in bounds)
        if reused:
            log.info("%s: resuming %s from %d of %d chunks already written", stage, key, reused, len(bounds))
        else:
            log.info("%s: computing %s in %d chunks", stage, key, len(bounds))
        self._store_spec(stage, key, spec)
        parts = []
        for start, stop in tqdm(bounds, desc=stage, unit="chunk", disable=not progress, leave=False):
            chunk_path = chunk_dir / f"{start:012d}-{stop:012d}.pt"
            if chunk_path.name in done:
                parts.append(torch.load(chunk_path, weights_only=False))
                continue
            part = compute_chunk(start, stop)
            atomic_save(part, chunk_path)
            parts.append(part)
        value = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        atomic_save(value, path)
        shutil.rmtree(chunk_dir, ignore_errors=True)
        return value

    def _store_spec(self, stage: str, key: str, spec: dict[str, Any]) -> None:
        text = json.dumps(_plain(spec), sort_keys=True, indent=1)
        _atomic_write_text(text, self.root / stage / f"{key}.json")

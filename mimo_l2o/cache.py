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

import errno
import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, is_dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock, Timeout
from tqdm.auto import tqdm

from mimo_l2o.errors import RunFailure

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


class DiskFull(RunFailure):
    """A write that found no space left: one line naming the folder, the space the file needs and the
    space free (nothing half-written is left: the write was to a temporary file, now removed)."""

    def __init__(self, folder: Path, name: str, needed: int, quota: bool = False):
        if quota:
            super().__init__(
                f"{folder}: your disk quota is exceeded (writing {name} needs about {_megabytes(needed)}); "
                "free some space or choose another folder"
            )
            return
        free = shutil.disk_usage(folder).free if folder.exists() else 0
        super().__init__(
            f"{folder}: no space left on the device (writing {name} needs about {_megabytes(needed)}, "
            f"{_megabytes(free)} free); free some space or choose another folder"
        )


def _megabytes(size: int) -> str:
    return f"{size / 1e6:,.1f} MB"


def _nbytes(obj: Any) -> int:
    """The bytes of the tensors in ``obj`` (dicts, lists and dataclasses of tensors)."""
    if isinstance(obj, torch.Tensor):
        return obj.nelement() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(_nbytes(v) for v in obj)
    return 0


def _quota(error: BaseException) -> bool:
    while error is not None:
        if isinstance(error, OSError) and error.errno == errno.EDQUOT:
            return True
        error = error.__cause__ or error.__context__
    return False


def _no_space(error: BaseException) -> bool:
    """``error`` (or one it came from) is a write that found the disk full: ENOSPC or EDQUOT, or
    torch's zip writer's report of a short write."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(error, RuntimeError) and (
            "unexpected pos" in str(error) or "failed writing" in str(error)
        ):
            return True
        error = error.__cause__ or error.__context__
    return False


def _atomic_write(
    path: Path,
    write: Callable[[Any], None],
    binary: bool = True,
    size: int = 0,
    before_replace: Callable[[Path], None] | None = None,
) -> None:
    """``write(file)`` into a temporary file in ``path``'s folder, then ``before_replace(temporary
    path)``, then ``os.replace`` onto ``path``; :class:`DiskFull` when the disk is full (``size``: the
    bytes the file needs, for its message)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        if _no_space(error):
            raise DiskFull(path.parent, path.name, size, _quota(error)) from None
        raise
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode())
        if before_replace is not None:
            before_replace(Path(tmp))
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if _no_space(error):
            raise DiskFull(path.parent, path.name, size, _quota(error)) from None
        raise


def atomic_save(obj: Any, path: Path, before_replace: Callable[[Path], None] | None = None) -> None:
    """``torch.save`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    _atomic_write(path, lambda f: torch.save(obj, f), size=_nbytes(obj), before_replace=before_replace)


def _atomic_write_text(text: str, path: Path) -> None:
    _atomic_write(path, lambda f: f.write(text), binary=False, size=len(text.encode()))


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
    """:func:`atomic_save` with the file's digest beside it (an entry without one is not trusted): the
    digest is written before the file is moved into place, so a reader who sees the file sees its
    digest too (another process may read an entry or a chunk the moment it appears)."""
    atomic_save(obj, path, lambda tmp: _atomic_write_text(file_digest(tmp) + "\n", _digest_path(path)))


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


@dataclass(frozen=True)
class Shard:
    """This process's part of a sharded labelling: shard ``index`` (from 0) of ``count``."""

    index: int
    count: int

    def share(self, chunks: list) -> list:
        """The shard's contiguous share of ``chunks`` (sizes differ by at most one)."""
        n = len(chunks)
        return chunks[self.index * n // self.count : (self.index + 1) * n // self.count]


@dataclass(frozen=True)
class _Chunk:
    index: int
    start: int
    stop: int
    folder: Path

    @property
    def path(self) -> Path:
        return self.folder / f"{self.start:012d}-{self.stop:012d}.pt"


def _span(chunks: list) -> str:
    """``3-5`` (1-based chunk numbers), ``4``, or ``none``."""
    if not chunks:
        return "none"
    first, last = chunks[0].index + 1, chunks[-1].index + 1
    return str(first) if first == last else f"{first}-{last}"


CHECK_ROWS = 4  # rows of an entry recomputed when it is checked on reading
CHECK_TOLERANCE = 1e-3  # recomputed rows may differ by this much, relative to the entry's largest value


def _same(cached: Any, fresh: Any, exact: bool) -> bool:
    """``cached`` and ``fresh`` (tensors, numbers, nested dicts and lists) agree: exactly, or each
    tensor within :data:`CHECK_TOLERANCE` of its largest magnitude (other machines and batch sizes
    round differently; a wrong entry differs by far more)."""
    if isinstance(cached, dict) and isinstance(fresh, dict):
        return cached.keys() == fresh.keys() and all(_same(cached[k], fresh[k], exact) for k in cached)
    if isinstance(cached, list | tuple) and isinstance(fresh, list | tuple):
        return len(cached) == len(fresh) and all(
            _same(a, b, exact) for a, b in zip(cached, fresh, strict=True)
        )
    if isinstance(cached, torch.Tensor) and isinstance(fresh, torch.Tensor):
        if cached.shape != fresh.shape or cached.dtype != fresh.dtype:
            return False
        if exact or not (cached.is_floating_point() or cached.is_complex()):
            return torch.equal(cached, fresh)
        scale = max(float(fresh.abs().max()) if fresh.numel() else 0.0, 1e-30)
        return bool(torch.allclose(cached, fresh, rtol=CHECK_TOLERANCE, atol=CHECK_TOLERANCE * scale))
    return cached == fresh


def _store(value: Any, path: Path, what: str) -> None:
    """:func:`save_entry`, or a warning when the folder is not this user's to write (a refused entry of
    another user's is then used from memory, not replaced)."""
    try:
        save_entry(value, path)
    except PermissionError as error:
        log.warning("%s: cannot store the entry (%s); using it without caching it", what, error)


def _owner(path: Path) -> str:
    try:
        import pwd

        return pwd.getpwuid(path.stat().st_uid).pw_name
    except (KeyError, OSError, ImportError):
        return "another user"


def _named(what: str, key: str) -> str:
    """``what`` with the entry's short key, for the log: ``labels val (1,000 samples, wmmse) [3f2a9c1b]``."""
    return f"{what} [{key[:8]}]"


class Cache:
    """Stage outputs under ``root/<stage>/<key>.pt``.

    Parameters
    ----------
    root : Path
        Cache folder (created on first write).
    check : str
        When a read entry is checked against a recomputation of some of its rows (:meth:`_checked`):
        ``auto`` (entries another user owns), ``always`` or ``never``.
    """

    def __init__(self, root: str | Path, check: str = "never"):
        self.root = Path(root).expanduser()
        self.check = check

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / f"{key}.pt"

    def _entry(self, stage: str, spec: dict[str, Any], what: str | None) -> tuple[str, Path, str]:
        """The entry's key, its path and its name in the log (``what`` or the stage, with the key)."""
        key = cache_key(spec)
        return key, self.path(stage, key), _named(what or stage, key)

    def get_or_compute(
        self, stage: str, spec: dict[str, Any], compute: Callable[[], Any], what: str | None = None
    ) -> tuple[Any, str]:
        """The cached value for ``spec``, computing and storing it on a miss; returns (value, key).
        ``what`` names the entry in the log (``network train (200,000 samples)``), else ``stage``."""
        key, path, what = self._entry(stage, spec, what)
        with self._lock(path):
            cached = self._reuse(what, path)
            if cached is not None and self._checking(path):
                fresh = compute()  # an unchunked stage is cheap (sampling): its whole value is the check
                if _same(cached, fresh, exact=False):
                    return cached, key
                self._refuse(what, path, "its values differ from a recomputation")
                self._store_spec(stage, key, spec)
                _store(fresh, path, what)
                return fresh, key
            if cached is not None:
                return cached, key
            log.info("%s: computing", what)
            value = compute()
            self._store_spec(stage, key, spec)
            save_entry(value, path)
        return value, key

    # ---- checks against tampering and silent bugs ----------------------------------------------
    def _checking(self, path: Path) -> bool:
        """Whether a read of the entry (or chunk) at ``path`` is checked: ``check`` ``always``, or
        ``auto`` and someone else may have written it: another user owns it, or it is writable by its
        group or by others (a shared folder under ``umask 002``)."""
        if self.check == "always":
            return True
        if self.check != "auto":
            return False
        info = path.stat()
        return info.st_uid != os.getuid() or bool(info.st_mode & 0o022)

    def _refuse(self, what: str, path: Path, why: str) -> None:
        owner = _owner(path)
        log.warning(
            "%s: the cached entry (written by %s) is refused: %s; computing it again", what, owner, why
        )
        try:
            _discard(path)
        except OSError:  # another user's file in a folder we may not write: it stays, unused
            pass

    def _rows_agree(self, what, value, num_samples, chunk_size, compute_chunk, row_wise, within=None) -> bool:
        """:data:`CHECK_ROWS` random rows of ``value`` (of its chunk ``within``, when given) recomputed,
        each alone when ``row_wise``, else the chunk that holds one of them as the stage computed it,
        agree with the entry."""
        chooser = random.SystemRandom()
        lo, hi = within or (0, num_samples)
        if row_wise:
            rows = sorted(chooser.sample(range(lo, hi), min(CHECK_ROWS, hi - lo)))
            spans = [(i, i + 1) for i in rows]
        else:
            start = chooser.randrange(lo, hi, chunk_size)
            spans = [(start, min(start + chunk_size, num_samples))]
        for start, stop in spans:
            fresh = compute_chunk(start, stop)
            if not _same({k: v[start:stop] for k, v in value.items()}, fresh, exact=False):
                log.warning("%s: rows %d-%d recomputed differ from the cached entry", what, start, stop)
                return False
        log.info("%s: %d recomputed rows agree with the cached entry", what, sum(b - a for a, b in spans))
        return True

    @staticmethod
    def _verified(what: str, path: Path) -> Any | None:
        """The verified entry at ``path``, or ``None`` when there is none or it failed its checks (then
        it is removed, with a warning naming ``what``, to be computed again)."""
        if not path.exists():
            return None
        try:
            return load_entry(path)
        except FileNotFoundError:  # removed meanwhile (its chunks' folder after assembly)
            return None
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
        shard: Shard | None = None,
        row_wise: bool = True,
    ) -> tuple[dict[str, torch.Tensor] | None, str]:
        """Compute ``compute_chunk(start, stop)`` over ``[0, num_samples)`` chunk by chunk.

        Finished chunks are written to ``root/<stage>/<key>.chunks/`` as they complete, each under a
        lock of its own, so that several processes (the jobs of a sharded labelling, a training run
        started beside them) fill one entry together and never compute a chunk twice: a chunk another
        process is computing is left to it and waited for at the end. A rerun after a kill loads the
        chunks written and computes only the rest. When all are done they are concatenated (along the
        first dimension) into the entry, by whichever process finds them complete, and the chunk folder
        is removed. The chunk size is not part of the key (the caller puts it in ``spec`` when the
        result depends on it). ``what`` names the entry in the log; without a progress bar every chunk
        logs a line when it is computed.

        With ``shard`` (this process is shard ``index`` of ``count``) only the shard's contiguous share
        of the chunks is computed and nothing is waited for: the entry is returned when this shard
        completed it, else ``None``; the log says which chunks the shard took and how many remain.
        ``row_wise``: ``compute_chunk(i, i + 1)`` gives row ``i`` (no draw depends on the chunk), so a
        check of a read entry recomputes single rows, not a chunk.
        """
        label = what
        key, path, what = self._entry(stage, spec, what)
        with self._lock(path):
            cached = self._reuse(what, path)
            if cached is not None and self._checking(path):
                if not self._rows_agree(what, cached, num_samples, chunk_size, compute_chunk, row_wise):
                    self._refuse(what, path, "recomputed rows differ from it")
                    cached = None
        if cached is not None:
            return cached, key
        folder = path.with_suffix(".chunks")
        chunks = [
            _Chunk(i, s, min(s + chunk_size, num_samples), folder)
            for i, s in enumerate(range(0, num_samples, chunk_size))
        ]
        self._store_spec(stage, key, spec)

        def again() -> dict[str, torch.Tensor] | None:  # the entry was refused after all: start over
            return self.chunked(
                stage, spec, num_samples, chunk_size, compute_chunk, progress, label, shard, row_wise
            )[0]

        mine = chunks if shard is None else shard.share(chunks)
        found = sum(c.path.exists() for c in mine)
        if found:
            log.info("%s: %d of %d chunks already written", what, found, len(mine))
        elif shard is None:
            log.info("%s: %d chunks", what, len(chunks))
        parts: dict[int, dict[str, torch.Tensor]] = {}
        busy, computed, here = [], 0, set()  # here: the chunks this process computed
        bar = tqdm(mine, desc=what.split(" (")[0], unit="chunk", disable=not progress, leave=False)
        for chunk in bar:
            status, part = self._fill(what, path, chunk, len(chunks), compute_chunk, progress, blocking=False)
            if status == "entry":  # another process assembled the entry meanwhile
                return self._assembled(what, path, again), key
            computed += status == "computed"
            if status == "computed":
                here.add(chunk.index)
            if status == "busy":
                busy.append(chunk)
            elif shard is None:  # a shard does not hold its chunks: another process may assemble them
                parts[chunk.index] = part
        if shard is not None:
            remaining = sum(not c.path.exists() for c in chunks)
            log.info(
                "%s: shard %d of %d took chunks %s of %d (%d computed here, %d left to another process); "
                "%d of %d chunks remain in all",
                what, shard.index + 1, shard.count, _span(mine), len(chunks), computed, len(busy),
                remaining, len(chunks),
            )  # fmt: skip
            if remaining:
                return None, key
        else:
            for chunk in busy:  # computed by another process: wait for it, then load it
                status, part = self._fill(what, path, chunk, len(chunks), compute_chunk, progress, True)
                if status == "entry":
                    return self._assembled(what, path, again), key
                parts[chunk.index] = part
        check = (num_samples, chunk_size, compute_chunk, row_wise)
        return self._assemble(what, path, chunks, parts, here, check), key

    def _fill(self, what, path, chunk, total, compute_chunk, progress, blocking):
        """Under the chunk's lock: ``("entry", None)`` when the whole entry exists by now, else the
        chunk, loaded (``"present"``) or computed and written (``"computed"``); ``("busy", None)`` when
        ``blocking`` is false and another process holds the lock."""
        chunk.folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(chunk.path.with_suffix(".lock")))
        try:
            lock.acquire(timeout=-1 if blocking else 0)
        except Timeout:
            return "busy", None
        try:
            if path.exists():
                return "entry", None
            part = self._verified(f"{what}: chunk {chunk.start}-{chunk.stop}", chunk.path)
            if part is not None:
                return "present", part
            began = time.perf_counter()
            # contiguous, as the assembled entry is: a reader of the chunk (a shard's next stage) must
            # compute on the same memory layout as a reader of the entry, or its floats may differ
            part = {k: v.contiguous() for k, v in compute_chunk(chunk.start, chunk.stop).items()}
            save_entry(part, chunk.path)
            if not progress:
                seconds = time.perf_counter() - began
                log.info("%s: chunk %d/%d computed in %.1f s", what, chunk.index + 1, total, seconds)
            return "computed", part
        finally:
            lock.release()

    def _assembled(self, what: str, path: Path, again: Callable[[], Any]) -> Any:
        """The entry another process assembled, read under its lock; computed over when it fails."""
        with self._lock(path):
            value = self._verified(what, path)
        return value if value is not None else again()

    def _assemble(self, what, path, chunks, parts, here, check) -> dict[str, torch.Tensor]:
        """The entry from its chunks (those in ``parts`` already loaded), written once, under the entry's
        lock; the chunk folder is removed. When a chunk file is one :meth:`_checking` distrusts (another
        user's, or writable by others), the entry is checked like a read entry first, and on a mismatch
        every chunk is computed again here."""
        num_samples, chunk_size, compute_chunk, row_wise = check
        with self._lock(path):
            value = self._verified(what, path)
            if value is not None:  # another process assembled it first
                return value
            # chunk files this process did not compute, which someone else may have written
            suspect = [
                c for c in chunks if c.index not in here and c.path.exists() and self._checking(c.path)
            ]
            for chunk in chunks:
                if chunk.index not in parts:
                    with FileLock(str(chunk.path.with_suffix(".lock"))):  # written by now, or being written
                        part = self._verified(f"{what}: chunk {chunk.start}-{chunk.stop}", chunk.path)
                        if part is None:
                            part = compute_chunk(chunk.start, chunk.stop)
                    parts[chunk.index] = part
            ordered = [parts[c.index] for c in chunks]
            value = {k: torch.cat([p[k] for p in ordered]) for k in ordered[0]}
            agree = (
                self._rows_agree(
                    what, value, num_samples, chunk_size, compute_chunk, row_wise, (c.start, c.stop)
                )
                for c in suspect
            )
            if not all(agree):
                log.warning("%s: chunks another user wrote differ from a recomputation; computing all", what)
                ordered = [compute_chunk(c.start, c.stop) for c in chunks]
                value = {k: torch.cat([p[k].contiguous() for p in ordered]) for k in ordered[0]}
            _store(value, path, what)
            shutil.rmtree(chunks[0].folder, ignore_errors=True)
        return value

    def chunk(
        self,
        stage: str,
        spec: dict[str, Any],
        start: int,
        stop: int,
        compute_chunk: Callable[[int, int], dict[str, torch.Tensor]],
        what: str | None = None,
    ) -> dict[str, torch.Tensor]:
        """Rows ``[start, stop)`` of a chunked entry (one of its chunks): a slice of the entry when it is
        assembled, else the chunk, loaded or computed and written under the chunk's lock (a shard's
        labels read the problems chunk of the same rows)."""
        key, path, what = self._entry(stage, spec, what)
        for _ in range(2):  # the entry may be assembled between the two looks
            status, part = self._fill(
                what, path, _Chunk(0, start, stop, path.with_suffix(".chunks")), 0, compute_chunk, True, True
            )
            if status != "entry":
                return part
            with self._lock(path):
                value = self._verified(what, path)
            if value is not None:
                return {k: v[start:stop] for k, v in value.items()}
        raise RuntimeError(f"{what}: rows {start}-{stop} could not be read")

    def _store_spec(self, stage: str, key: str, spec: dict[str, Any]) -> None:
        text = json.dumps(_plain(spec), sort_keys=True, indent=1)
        _atomic_write_text(text, self.root / stage / f"{key}.json")

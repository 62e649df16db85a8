"""The on-disk cache: stable keys, compute-once, resumable chunks, atomic writes; and the seeds
the runner derives for its stages."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import pytest
import torch

from mimo_l2o import cache as cache_module
from mimo_l2o.cache import Cache, Shard, atomic_save, cache_key
from mimo_l2o.data import derive_seed, generator


class Colour(str, Enum):
    red = "red"
    blue = "blue"


@dataclass
class Part:
    name: str = "gaussian_ic"
    num_users: int = 10
    p_max: float = 1.0
    colour: Colour = Colour.red
    widths: list[int] = field(default_factory=lambda: [200, 200])


SPEC = {
    "stage": "network",
    "split": "train",
    "num_samples": 1000,
    "scenario": {"name": "gaussian_ic", "num_users": 10, "p_max": 1.0, "extra": {"a": 1, "b": [1, 2]}},
}


def reordered(obj):
    """The same mapping with every dict's keys in reverse insertion order."""
    if isinstance(obj, dict):
        return {k: reordered(obj[k]) for k in reversed(list(obj))}
    return obj


def leaves(obj, path=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from leaves(v, (*path, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from leaves(v, (*path, i))
    else:
        yield path, obj


def with_leaf(obj, path, value):
    if not path:
        return value
    if isinstance(obj, dict):
        return {k: with_leaf(v, path[1:], value) if k == path[0] else v for k, v in obj.items()}
    return [with_leaf(v, path[1:], value) if i == path[0] else v for i, v in enumerate(obj)]


def no_temp_files(root: Path) -> bool:
    return not [p for p in root.rglob("*") if p.name.endswith(".tmp")]


# ---------------------------------------------------------------------------------------------
# cache_key
# ---------------------------------------------------------------------------------------------
def test_cache_key_is_stable_and_order_free():
    key = cache_key(SPEC)
    assert len(key) == 20 and all(c in "0123456789abcdef" for c in key)
    assert cache_key(SPEC) == key
    assert cache_key(reordered(SPEC)) == key
    assert list(reordered(SPEC)) != list(SPEC)  # the reordering did reorder


def test_cache_key_changes_with_every_value():
    key = cache_key(SPEC)
    seen = {key}
    for path, value in leaves(SPEC):
        new = value + 1 if isinstance(value, int | float) else f"{value}x"
        changed = cache_key(with_leaf(SPEC, path, new))
        assert changed != key, path
        seen.add(changed)
    assert len(seen) == 1 + len(list(leaves(SPEC)))
    # an added key and a removed key change it too
    assert cache_key({**SPEC, "new": None}) != key
    assert cache_key({k: v for k, v in SPEC.items() if k != "split"}) != key


def test_cache_key_accepts_dataclasses_and_enums():
    part = Part()
    plain = {"name": "gaussian_ic", "num_users": 10, "p_max": 1.0, "colour": "red", "widths": [200, 200]}
    # a dataclass means its fields, an enum its value
    assert cache_key({"scenario": part}) == cache_key({"scenario": plain})
    assert cache_key({"scenario": part}) == cache_key({"scenario": Part()})
    assert cache_key({"scenario": part}) != cache_key({"scenario": Part(colour=Colour.blue)})
    assert cache_key({"scenario": part}) != cache_key({"scenario": Part(widths=[200, 100])})
    assert cache_key({"c": Colour.blue}) == cache_key({"c": "blue"})


# ---------------------------------------------------------------------------------------------
# get_or_compute
# ---------------------------------------------------------------------------------------------
def test_get_or_compute_computes_once_and_writes_the_spec(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"x": torch.arange(5, dtype=torch.float64) / 3, "meta": {"n": 5}}

    spec = {**SPEC, "scenario": Part()}
    value, key = Cache(tmp_path).get_or_compute("networks", spec, compute)
    assert key == cache_key(spec)
    assert len(calls) == 1
    assert (tmp_path / "networks" / f"{key}.pt").is_file()
    written = json.loads((tmp_path / "networks" / f"{key}.json").read_text())
    assert written == {**SPEC, "scenario": {**Part().__dict__, "colour": "red"}}
    # the same spec, in another order and through another Cache object, is reused
    again, key2 = Cache(tmp_path).get_or_compute("networks", reordered(spec), compute)
    assert key2 == key and len(calls) == 1
    assert torch.equal(again["x"], value["x"]) and again["meta"] == {"n": 5}
    # another spec or another stage computes
    Cache(tmp_path).get_or_compute("networks", {**spec, "split": "val"}, compute)
    Cache(tmp_path).get_or_compute("labels", spec, compute)
    assert len(calls) == 3
    assert no_temp_files(tmp_path)


def test_get_or_compute_failure_leaves_no_entry(tmp_path):
    def boom():
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        Cache(tmp_path).get_or_compute("networks", SPEC, boom)
    key = cache_key(SPEC)
    assert not (tmp_path / "networks" / f"{key}.pt").exists()
    value, _ = Cache(tmp_path).get_or_compute("networks", SPEC, lambda: torch.ones(2))
    assert torch.equal(value, torch.ones(2))


# ---------------------------------------------------------------------------------------------
# chunked
# ---------------------------------------------------------------------------------------------
N = 23


def chunk_values(start: int, stop: int) -> dict[str, torch.Tensor]:
    """A deterministic function of the sample indices only (each sample its own seed)."""
    rows = [
        torch.rand(3, generator=torch.Generator().manual_seed(1000 + i), dtype=torch.float64)
        for i in range(start, stop)
    ]
    return {"decision": torch.stack(rows), "index": torch.arange(start, stop)}


class Counter:
    def __init__(self, fail_at: int | None = None):
        self.calls: list[tuple[int, int]] = []
        self.fail_at = fail_at

    def __call__(self, start: int, stop: int) -> dict[str, torch.Tensor]:
        if len(self.calls) + 1 == self.fail_at:
            raise RuntimeError("killed during chunk")
        self.calls.append((start, stop))
        return chunk_values(start, stop)


def test_chunked_equals_one_go_and_is_cached(tmp_path):
    whole = chunk_values(0, N)
    count = Counter()
    value, key = Cache(tmp_path).chunked("labels/wmmse", SPEC, N, 5, count)
    assert key == cache_key(SPEC)
    assert count.calls == [(0, 5), (5, 10), (10, 15), (15, 20), (20, 23)]
    assert set(value) == {"decision", "index"}
    assert torch.equal(value["decision"], whole["decision"])
    assert torch.equal(value["index"], torch.arange(N))
    path = tmp_path / "labels" / "wmmse" / f"{key}.pt"
    assert path.is_file() and (path.parent / f"{key}.json").is_file()
    assert not path.with_suffix(".chunks").exists()
    # the second time, nothing is computed
    again, _ = Cache(tmp_path).chunked("labels/wmmse", SPEC, N, 5, count)
    assert len(count.calls) == 5
    assert torch.equal(again["decision"], whole["decision"])


def test_chunk_size_changes_neither_key_nor_result(tmp_path):
    results = {}
    for size in (1, 4, 7, N, 100):
        value, key = Cache(tmp_path / str(size)).chunked("labels", SPEC, N, size, Counter())
        results[size] = (value, key)
    reference, key = results[N]
    for value, other_key in results.values():
        assert other_key == key
        assert torch.equal(value["decision"], reference["decision"])
    # a rerun with another chunk size reuses the finished entry
    count = Counter()
    value, _ = Cache(tmp_path / "4").chunked("labels", SPEC, N, 9, count)
    assert count.calls == [] and torch.equal(value["decision"], reference["decision"])


def test_chunked_resumes_after_a_failure(tmp_path):
    stage_dir = tmp_path / "labels"
    key = cache_key(SPEC)
    path = stage_dir / f"{key}.pt"
    chunk_dir = path.with_suffix(".chunks")

    first = Counter(fail_at=3)
    with pytest.raises(RuntimeError, match="killed during chunk"):
        Cache(tmp_path).chunked("labels", SPEC, N, 5, first)
    assert first.calls == [(0, 5), (5, 10)]
    # (and each chunk's lock file beside it)
    assert sorted(p.name for p in chunk_dir.iterdir() if p.suffix != ".lock") == [
        "000000000000-000000000005.pt",
        "000000000000-000000000005.pt.sha256",
        "000000000005-000000000010.pt",
        "000000000005-000000000010.pt.sha256",
    ]
    assert not path.exists()
    assert no_temp_files(tmp_path)
    # the chunk files hold what was computed
    assert torch.equal(torch.load(chunk_dir / "000000000005-000000000010.pt")["index"], torch.arange(5, 10))

    second = Counter()
    value, key2 = Cache(tmp_path).chunked("labels", SPEC, N, 5, second)
    assert key2 == key
    assert second.calls == [(10, 15), (15, 20), (20, 23)]
    whole = chunk_values(0, N)
    assert torch.equal(value["decision"], whole["decision"])
    assert torch.equal(value["index"], torch.arange(N))
    assert not chunk_dir.exists()
    assert path.is_file()
    assert torch.equal(torch.load(path)["decision"], whole["decision"])
    assert no_temp_files(tmp_path)


# ---------------------------------------------------------------------------------------------
# atomic_save
# ---------------------------------------------------------------------------------------------
def test_atomic_save_round_trip(tmp_path):
    obj = {"a": torch.arange(4), "b": [1, "x"]}
    path = tmp_path / "sub" / "entry.pt"
    atomic_save(obj, path)
    loaded = torch.load(path)
    assert torch.equal(loaded["a"], obj["a"]) and loaded["b"] == [1, "x"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["entry.pt"]


def test_atomic_save_leaves_no_partial_file(tmp_path, monkeypatch):
    def half_written(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half of a zip file")
        f.flush()
        raise OSError("disk full")

    monkeypatch.setattr(cache_module.torch, "save", half_written)
    path = tmp_path / "entry.pt"
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"a": torch.ones(3)}, path)
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []

    # an existing entry is left as it was
    monkeypatch.undo()
    atomic_save({"a": torch.ones(3)}, path)
    before = path.read_bytes()
    monkeypatch.setattr(cache_module.torch, "save", half_written)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"a": torch.zeros(3)}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["entry.pt"]


def test_get_or_compute_write_failure_leaves_no_entry(tmp_path, monkeypatch):
    def fails(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(cache_module.torch, "save", fails)
    with pytest.raises(OSError):
        Cache(tmp_path).get_or_compute("networks", SPEC, lambda: torch.ones(2))
    assert not (tmp_path / "networks" / f"{cache_key(SPEC)}.pt").exists()
    assert no_temp_files(tmp_path)
    monkeypatch.undo()
    calls = []
    value, _ = Cache(tmp_path).get_or_compute("networks", SPEC, lambda: calls.append(1) or torch.ones(2))
    assert calls == [1] and torch.equal(value, torch.ones(2))


# ---------------------------------------------------------------------------------------------
# integrity and safety of a shared cache
# ---------------------------------------------------------------------------------------------
class Planted:
    """An object whose unpickling would run code: writes a marker file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def entry_of(tmp_path, stage="networks", spec=SPEC) -> Path:
    return tmp_path / stage / f"{cache_key(spec)}.pt"


def counting(value):
    calls = []

    def compute():
        calls.append(1)
        return value

    return compute, calls


@pytest.mark.parametrize("damage", ["garbled", "truncated", "no digest", "planted"])
def test_a_damaged_or_planted_entry_is_computed_again(tmp_path, damage, caplog):
    value = {"gains": torch.arange(64, dtype=torch.float64).view(8, 8), "labels": torch.ones(8)}
    compute, calls = counting(value)
    Cache(tmp_path).get_or_compute("networks", SPEC, compute)
    path = entry_of(tmp_path)
    digest = path.with_name(path.name + ".sha256")
    assert digest.read_text().strip() == cache_module.file_digest(path)
    marker = tmp_path / "code_ran"
    raw = bytearray(path.read_bytes())
    if damage == "garbled":  # some stored values zeroed: still a valid file, other numbers
        loaded = torch.load(path, weights_only=True)
        loaded["gains"][2:4] = 0.0
        torch.save(loaded, path)
    elif damage == "truncated":
        path.write_bytes(bytes(raw[: len(raw) // 2]))
    elif damage == "no digest":
        digest.unlink()
    else:  # a planted pickle, with a digest that matches it
        torch.save({"gains": Planted(str(marker))}, path)
        digest.write_text(cache_module.file_digest(path))
        (tmp_path / "planted.pt").write_bytes(path.read_bytes())
    with caplog.at_level("WARNING", logger="mimo_l2o.cache"):
        again, _ = Cache(tmp_path).get_or_compute("networks", SPEC, compute)
    assert calls == [1, 1]
    assert not marker.exists()
    assert torch.equal(again["gains"], value["gains"])
    assert any("corrupt" in r.getMessage() and cache_key(SPEC)[:8] in r.getMessage() for r in caplog.records)
    # recomputed and verified: the next read reuses it
    Cache(tmp_path).get_or_compute("networks", SPEC, compute)
    assert calls == [1, 1]
    assert digest.read_text().strip() == cache_module.file_digest(path)
    if damage == "planted":  # the control: loaded as a full pickle, the planted file does run code
        torch.load(tmp_path / "planted.pt", weights_only=False)
        assert marker.exists()


def test_a_damaged_chunk_is_computed_again_and_the_others_reused(tmp_path):
    def chunk(start, stop):
        chunk.calls.append(start)
        return {"x": torch.arange(start, stop, dtype=torch.float64)}

    chunk.calls = []

    def fail_at_8(start, stop):
        if start == 8:
            raise RuntimeError("killed")
        return chunk(start, stop)

    with pytest.raises(RuntimeError):
        Cache(tmp_path).chunked("labels", SPEC, 12, 4, fail_at_8)
    chunks = sorted((tmp_path / "labels").glob("*.chunks/*.pt"))
    assert [p.name[:12] for p in chunks] == ["000000000000", "000000000004"]
    chunks[1].write_bytes(chunks[1].read_bytes()[:-10])  # the second chunk truncated
    chunk.calls.clear()
    value, _ = Cache(tmp_path).chunked("labels", SPEC, 12, 4, chunk)
    assert chunk.calls == [4, 8]
    assert torch.equal(value["x"], torch.arange(12, dtype=torch.float64))


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_entries_have_the_permissions_the_umask_allows(tmp_path, umask):
    old = os.umask(umask)
    try:
        Cache(tmp_path).get_or_compute("networks", SPEC, lambda: torch.ones(3))
        Cache(tmp_path).chunked("labels", SPEC, 6, 4, lambda a, b: {"x": torch.ones(b - a)})
    finally:
        os.umask(old)
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".lock"]
    assert {p.suffix for p in files} == {".pt", ".json", ".sha256"}
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask, p.name


# ---------------------------------------------------------------------------------------------
# derive_seed
# ---------------------------------------------------------------------------------------------
def test_derive_seed_deterministic_distinct_and_63_bit():
    parts = [
        (0,),
        (1,),
        (7, "network", "train"),
        (7, "network", "val"),
        (7, "network", "test"),
        (8, "network", "train"),
        (7, "labels", "train", 0),
        (7, "labels", "train", 10000),
        (7, "labels", "val", 0),
        (7, "train"),
        (7, "train", 0),
    ] + [(s, "labels", "train", start) for s in range(5) for start in range(0, 50000, 5000)]
    seeds = [derive_seed(*p) for p in parts]
    assert seeds == [derive_seed(*p) for p in parts]
    assert len(set(seeds)) == len(parts)
    assert all(isinstance(s, int) and 0 <= s < 2**63 for s in seeds)
    # the documented recipe: SHA-256 of the parts as a JSON list, first 8 bytes little-endian, 63 bits
    import hashlib

    digest = hashlib.sha256(b'[7, "network", "train"]').digest()
    assert derive_seed(7, "network", "train") == int.from_bytes(digest[:8], "little") & (2**63 - 1)
    # types and boundaries count: no two different part lists share a seed by their encoding
    assert derive_seed(1) != derive_seed("1")
    assert derive_seed("a/b") != derive_seed("a", "b")
    # the generators built from them draw reproducibly, and differently per stage
    a = torch.rand(4, generator=generator(7, "network", "train"))
    assert torch.equal(a, torch.rand(4, generator=generator(7, "network", "train")))
    assert not torch.equal(a, torch.rand(4, generator=generator(7, "network", "val")))


# ---------------------------------------------------------------------------------------------
# sharded labelling: disjoint shares, chunk locks, assembly by whoever completes the entry
# ---------------------------------------------------------------------------------------------
def test_shards_are_disjoint_contiguous_and_cover_every_chunk():
    chunks = list(range(10))
    shares = [Shard(i, 4).share(chunks) for i in range(4)]
    assert sum(shares, []) == chunks  # in order, each chunk once
    assert sorted(len(s) for s in shares) == [2, 2, 3, 3]
    assert Shard(0, 1).share(chunks) == chunks
    assert [Shard(i, 12).share(chunks) for i in range(12)].count([]) == 2  # more shards than chunks


def test_sharded_entry_equals_the_unsharded_one_byte_for_byte(tmp_path, caplog):
    caplog.set_level("INFO", logger="mimo_l2o.cache")
    one = Counter()
    Cache(tmp_path / "one").chunked("labels", SPEC, N, 5, one)
    calls = []
    for index in range(3):  # three jobs, one after the other
        count = Counter()
        value, key = Cache(tmp_path / "sharded").chunked("labels", SPEC, N, 5, count, shard=Shard(index, 3))
        calls += count.calls
        assert (value is None) == (index < 2)  # the last shard completes and assembles the entry
    assert sorted(calls) == sorted(one.calls)  # every chunk computed once, by one shard
    entry = Path("labels") / f"{key}.pt"
    assert (tmp_path / "sharded" / entry).read_bytes() == (tmp_path / "one" / entry).read_bytes()
    assert not (tmp_path / "sharded" / entry).with_suffix(".chunks").exists()
    said = "shard 3 of 3 took chunks 4-5 of 5 (2 computed here, 0 left to another process); 0 of 5 chunks"
    assert said in caplog.text


def test_a_run_after_some_shards_computes_only_the_missing_chunks(tmp_path):
    Cache(tmp_path).chunked("labels", SPEC, N, 5, Counter(), shard=Shard(0, 2))  # chunks 1-2 of 5
    rest = Counter()
    value, _ = Cache(tmp_path).chunked("labels", SPEC, N, 5, rest)
    assert rest.calls == [(10, 15), (15, 20), (20, 23)]
    assert torch.equal(value["decision"], chunk_values(0, N)["decision"])
    # a shard that comes late finds the entry and computes nothing
    late = Counter()
    again, _ = Cache(tmp_path).chunked("labels", SPEC, N, 5, late, shard=Shard(1, 2))
    assert late.calls == [] and torch.equal(again["decision"], value["decision"])


def test_a_chunk_another_process_holds_is_left_to_it_then_read(tmp_path):
    from filelock import FileLock

    key = cache_key(SPEC)
    folder = tmp_path / "labels" / f"{key}.chunks"
    folder.mkdir(parents=True)
    held = FileLock(str(folder / "000000000005-000000000010.lock"))
    held.acquire()  # another process is computing chunk 2
    shard = Counter()
    value, _ = Cache(tmp_path).chunked("labels", SPEC, 10, 5, shard, shard=Shard(0, 1))
    assert value is None and shard.calls == [(0, 5)]  # a shard does not wait for it
    cache_module.save_entry(chunk_values(5, 10), folder / "000000000005-000000000010.pt")
    held.release()  # ... which wrote it
    waiting = Counter()
    value, _ = Cache(tmp_path).chunked("labels", SPEC, 10, 5, waiting)
    assert waiting.calls == [] and torch.equal(value["decision"], chunk_values(0, 10)["decision"])


def test_chunks_are_stored_contiguous_whatever_the_computation_returns(tmp_path):
    # a shard's next stage reads a chunk, a run's reads the assembled entry: one memory layout for both
    def transposed(start, stop):
        return {"x": torch.arange(4.0 * (stop - start)).reshape(4, stop - start).T}

    Cache(tmp_path).chunked("labels", SPEC, 6, 3, transposed, shard=Shard(0, 2))
    (chunk,) = (tmp_path / "labels").glob("*.chunks/*.pt")
    assert torch.load(chunk)["x"].is_contiguous()


# ---------------------------------------------------------------------------------------------
# checked reads: a wrong entry with a matching digest is refused
# ---------------------------------------------------------------------------------------------
def _plant(path: Path, value: dict) -> None:
    """Replace the entry at ``path`` with other valid tensors and a digest that matches them."""
    cache_module.save_entry(value, path)


def test_an_honest_entry_passes_the_check_by_a_few_recomputed_rows(tmp_path):
    value, _ = Cache(tmp_path).chunked("labels", SPEC, N, 5, Counter())
    count = Counter()
    again, _ = Cache(tmp_path, check="always").chunked("labels", SPEC, N, 5, count)
    assert len(count.calls) == cache_module.CHECK_ROWS and all(b == a + 1 for a, b in count.calls)
    assert torch.equal(again["decision"], value["decision"])
    unchecked = Counter()
    Cache(tmp_path, check="auto").chunked("labels", SPEC, N, 5, unchecked)  # this user's own entry
    assert unchecked.calls == []


def test_an_entry_rewritten_with_wrong_values_and_a_matching_digest_is_refused(tmp_path, caplog):
    value, key = Cache(tmp_path).chunked("labels", SPEC, N, 5, Counter())
    path = tmp_path / "labels" / f"{key}.pt"
    _plant(path, {**value, "decision": value["decision"] * 14.83})
    assert (
        Cache(tmp_path).chunked("labels", SPEC, N, 5, Counter())[0]["decision"].max() > 1
    )  # the digest passes
    count = Counter()
    checked, _ = Cache(tmp_path, check="always").chunked("labels", SPEC, N, 5, count)
    assert torch.equal(checked["decision"], chunk_values(0, N)["decision"])  # recomputed
    assert "is refused: recomputed rows differ from it" in caplog.text
    assert torch.equal(torch.load(path)["decision"], value["decision"])  # and stored in its place
    # a chunk of a stage drawn per chunk (not row-wise) is recomputed whole for the check
    _plant(path, {**value, "decision": value["decision"] + 1.0})
    whole = Counter()
    Cache(tmp_path, check="always").chunked("labels", SPEC, N, 5, whole, row_wise=False)
    assert whole.calls[0] in [(0, 5), (5, 10), (10, 15), (15, 20), (20, 23)]
    assert len(whole.calls) == 1 + 5  # the checked chunk, then the whole entry again


def test_an_unchunked_entry_is_checked_against_its_recomputation(tmp_path, caplog):
    def sample():
        return {"x": torch.arange(6.0), "params": {"p_max": 1.0}}

    value, key = Cache(tmp_path).get_or_compute("networks", SPEC, sample)
    path = tmp_path / "networks" / f"{key}.pt"
    _plant(path, {"x": torch.arange(6.0) + 0.5, "params": {"p_max": 1.0}})
    checked, _ = Cache(tmp_path, check="always").get_or_compute("networks", SPEC, sample)
    assert torch.equal(checked["x"], value["x"]) and "is refused" in caplog.text


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give an entry another owner")
def test_auto_checks_the_entries_another_user_wrote(tmp_path):
    value, key = Cache(tmp_path).chunked("labels", SPEC, N, 5, Counter())
    path = tmp_path / "labels" / f"{key}.pt"
    _plant(path, {**value, "decision": -value["decision"]})
    os.chown(path, 54321, -1)  # a group member's
    count = Counter()
    checked, _ = Cache(tmp_path, check="auto").chunked("labels", SPEC, N, 5, count)
    assert torch.equal(checked["decision"], value["decision"]) and len(count.calls) > 5


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("cache_check=sometimes", "cache_check"),
        ("data.shard=4", "data.shard"),
        ("data.shards=0", "data.shards"),
    ],
)
def test_bad_check_and_shard_values_name_their_key(override, key):
    from mimo_l2o.__main__ import composed
    from mimo_l2o.errors import ConfigError

    extra = ["data.shards=4"] if override == "data.shard=4" else []
    with pytest.raises(ConfigError) as err:
        composed(override, *extra)
    assert err.value.key == key


def test_a_planted_chunk_others_could_write_is_caught_when_the_entry_is_assembled(tmp_path, caplog):
    folder = tmp_path / "labels" / f"{cache_key(SPEC)}.chunks"
    folder.mkdir(parents=True)
    planted = folder / "000000000005-000000000010.pt"
    wrong = chunk_values(5, 10)
    cache_module.save_entry({**wrong, "decision": wrong["decision"] + 3.0}, planted)
    os.chmod(planted, 0o664)  # group-writable: a group member may have written it
    value, _ = Cache(tmp_path, check="auto").chunked("labels", SPEC, N, 5, Counter())
    assert torch.equal(value["decision"], chunk_values(0, N)["decision"])
    assert "differ from a recomputation" in caplog.text
    # the same chunk, this user's own and not group-writable, is trusted under auto (never rechecked)
    other = tmp_path / "other"
    folder = other / "labels" / f"{cache_key(SPEC)}.chunks"
    folder.mkdir(parents=True)
    cache_module.save_entry({**wrong, "decision": wrong["decision"] + 3.0}, folder / planted.name)
    os.chmod(folder / planted.name, 0o644)
    trusted, _ = Cache(other, check="auto").chunked("labels", SPEC, N, 5, Counter())
    assert trusted["decision"][5:10].min() > 2.9

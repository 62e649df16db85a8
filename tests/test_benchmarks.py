"""The benchmark page generator at tiny sizes: every script still runs and the page is assembled from
their output, stamped with the commit, and written only when everything ran."""

from __future__ import annotations

import dataclasses
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GENERATOR = ROOT / "benchmarks" / "generate_docs.py"


def generate(out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(GENERATOR), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )


def load():
    """The generator as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("generate_docs", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_quick_page_has_every_section_with_its_tables_and_the_commit(tmp_path):
    generate_docs = load()
    out = tmp_path / "benchmarks.md"
    done = generate(out)
    assert done.returncode == 0, done.stderr[-2000:]
    text = out.read_text()
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    assert f"commit `{commit[:12]}`" in text and "Quick sizes" in text
    sections = text.split("\n## ")[1:]
    assert [s.splitlines()[0] for s in sections] == [s.title for s in generate_docs.SECTIONS]
    for section, spec in zip(sections, generate_docs.SECTIONS, strict=True):
        assert f"python benchmarks/{spec.script} {' '.join(spec.quick)}" in section
        assert "machine: " in section
        tables, rows = [], []
        for line in [*section.splitlines(), ""]:  # consecutive "|" lines: header, rule, rows
            if line.startswith("|"):
                rows.append(line)
            elif rows:
                tables.append(rows)
                rows = []
        assert tables and all(len(t) >= 3 and t[1].startswith("|---") for t in tables), spec.title
        assert all(row.count("|") == t[0].count("|") for t in tables for row in t), spec.title
    by_title = dict(zip((s.title for s in generate_docs.SECTIONS), sections, strict=True))
    fairness = by_title[generate_docs.FAIRNESS.title]
    assert "problems with a negative interference gain: 0 of 40" in fairness
    assert "non-finite objectives of the batched solvers: max-min 0, max-product 0" in fairness
    # WMMSE beamforming: both loops end where the batched solver does, at the same iteration
    rows = [line.split("|")[1:-1] for line in by_title[generate_docs.WMMSE_BF.title].splitlines()]
    rows = [[cell.strip() for cell in row] for row in rows if row and row[0].strip()[:1].isdigit()]
    assert {row[2] for row in rows} == {"eig", "solve"}
    for row in rows:
        assert float(row[-3]) < 1e-9 and row[-2] == "4/4", row


def test_a_failing_benchmark_leaves_the_page_as_it_was(tmp_path, monkeypatch, capsys):
    generate_docs = load()
    out = tmp_path / "benchmarks.md"
    out.write_text("previous page\n")
    broken = dataclasses.replace(generate_docs.WMMSE, quick=("--no-such-option",))
    monkeypatch.setattr(generate_docs, "SECTIONS", (generate_docs.FAIRNESS, broken))
    monkeypatch.setattr(sys, "argv", ["generate_docs.py", "--quick", "--out", str(out)])
    with pytest.raises(SystemExit, match="benchmarks/wmmse.py failed with exit 2"):
        generate_docs.main()
    assert out.read_text() == "previous page\n"
    assert [p.name for p in tmp_path.iterdir()] == ["benchmarks.md"]  # no temporary file left


def test_the_fdd_channel_map_bounds_improve_with_the_features_and_the_paths_fit_is_close(tmp_path):
    """``benchmarks/fdd_channel_map.py`` at small sizes: each feature set holds the previous one, so its
    least-squares fit is at least as good in NMSE (up to the test draws' noise), and the path features make
    eq. (40)'s map nearly linear (a closed form: exact paths give a linear map up to the array's
    interpolation between the two carriers); under pilots every fit is worse than without noise."""
    out = tmp_path / "map.md"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "fdd_channel_map.py"), "--train", "2000", "--test", "200"]
        + ["--observe", "perfect", "6", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {}
    for line in out.read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 5 and cells[1] in ("antenna", "beamspace", "paths"):
            rows[cells[0], cells[1]] = (float(cells[3]), float(cells[4]))
    perfect = {k: v for (o, k), v in rows.items() if o == "perfect"}
    pilots = {k: v for (o, k), v in rows.items() if o == "LS, L = 6, pilot power p_max"}
    assert list(perfect) == list(pilots) == ["antenna", "beamspace", "paths"]
    assert perfect["paths"][0] < perfect["beamspace"][0] - 10 and perfect["paths"][0] < -15
    assert perfect["beamspace"][0] < perfect["antenna"][0] + 0.5
    assert perfect["paths"][1] > 0.98 and perfect["paths"][1] > perfect["antenna"][1]
    assert all(pilots[k][0] > perfect[k][0] for k in perfect)  # the LS estimate's noise
    assert "Generated by `python benchmarks/fdd_channel_map.py --train 2000" in out.read_text()

"""scripts/compare_claims.py: two runs' claim records, field by field."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "compare_claims.py"
spec = importlib.util.spec_from_file_location("compare_claims", SCRIPT)
compare = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare)


def write(folder: Path, name: str, record: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(record))


def test_same_records_pass_and_a_changed_figure_fails(tmp_path, capsys):
    record = {"verdict": "supported", "figures": {"drop": -0.171, "per_seed": [0.1, float("nan")]},
              "recorded": "2026-12-06T08:00:00", "artifacts": ["a"]}
    write(tmp_path / "one", "C0-x.json", record)
    write(tmp_path / "two", "C0-x.json", {**record, "recorded": "later", "artifacts": ["b"]})
    assert compare.main([str(tmp_path / "one"), str(tmp_path / "two")]) == 0
    assert capsys.readouterr().out.startswith("SAME C0-x.json")
    write(tmp_path / "two", "C0-x.json", {**record, "figures": {"drop": -0.15, "per_seed": [0.1, float("nan")]}})
    assert compare.main([str(tmp_path / "one"), str(tmp_path / "two")]) == 1
    assert "figures.drop: -0.171 -> -0.15" in capsys.readouterr().out


def test_a_missing_record_and_the_prefix_filter(tmp_path, capsys):
    write(tmp_path / "one", "C1-a.json", {"verdict": "x"})
    write(tmp_path / "one", "C2-b.json", {"verdict": "y"})
    write(tmp_path / "two", "C1-a.json", {"verdict": "x"})
    assert compare.main([str(tmp_path / "one"), str(tmp_path / "two"), "C1"]) == 0
    assert compare.main([str(tmp_path / "one"), str(tmp_path / "two")]) == 1
    assert "MISSING C2-b.json" in capsys.readouterr().out
    assert compare.differences({"a": {"b": 1}}, {"a": {"b": 1, "c": 2}}) == ["a.c: None -> 2"]

"""The record of a claim check (notebook 02 on), the ledger that gathers them, and the claims package's layout."""
import json
import os
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import mdrl_lib
from mdrl_lib.claims import ClaimCheck, checks_table, claim_path, ledger, load_check, record_check


def _check(**changes):
    fields = dict(claim="C4", name="shared-routes", statement="s", paper="p", measured="m", baseline="b",
                  supported=True, why="w", figures={"x": np.float64(0.5), "n": np.int64(3), "gone": float("nan")})
    return ClaimCheck(**{**fields, **changes})


def test_record_check_round_trips_through_json(tmp_path):
    check = _check()
    path = record_check(tmp_path, check, notebook="02_shared_routes")
    assert path == tmp_path / "claims" / "C4-shared-routes.json" == claim_path(tmp_path, check)
    record = json.loads(path.read_text())
    assert record["verdict"] == "supported" and record["notebook"] == "02_shared_routes"
    assert record["figures"] == {"x": 0.5, "n": 3, "gone": None}  # numpy scalars and nan made plain
    assert load_check(path) == check


def test_record_check_with_a_kit_records_the_run(tmp_path):
    config = SimpleNamespace(scale="toy", seed=7, model=SimpleNamespace(name="toy"))
    kit = SimpleNamespace(config=config, run_dir=tmp_path / "run")
    record = json.loads(record_check(kit, _check(supported=None)).read_text())
    assert record["run"] == {"scale": "toy", "seed": 7, "model": "toy"} and record["verdict"] == "not testable here"


def test_record_check_replaces_atomically_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    path = record_check(tmp_path, _check(supported=True))
    calls = []
    real_replace = os.replace

    def spy(src, dst):
        calls.append((Path(src), Path(dst)))
        assert Path(src).parent == Path(dst).parent and Path(src).is_file()  # written in full, then renamed
        assert json.loads(Path(dst).read_text())["supported"] is True  # the old record is intact until then
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    record_check(tmp_path, _check(supported=False))
    assert len(calls) == 1 and calls[0][1] == path
    assert json.loads(path.read_text())["supported"] is False
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_a_failed_write_keeps_the_old_record_and_cleans_up(tmp_path, monkeypatch):
    path = record_check(tmp_path, _check(supported=True))

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        record_check(tmp_path, _check(supported=False))
    assert json.loads(path.read_text())["supported"] is True
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_a_check_refuses_bad_fields():
    with pytest.raises(ValueError, match="unknown claim"):
        _check(claim="C9")
    with pytest.raises(ValueError, match="slug"):
        _check(name="Shared Routes")
    with pytest.raises(TypeError, match="True, False or None"):
        _check(supported="yes")
    with pytest.raises(TypeError, match="number, a string or None"):
        _check(figures={"table": [1, 2]})
    with pytest.raises(TypeError, match="ClaimCheck"):
        record_check(Path("."), {"claim": "C3"})


def test_checks_table_has_one_row_per_check_with_its_verdict():
    table = checks_table([_check(), _check(claim="C3", name="math-qa-gradients", supported=False)])
    assert list(table["claim"]) == ["C4", "C3"] and list(table["verdict"]) == ["supported", "not supported"]


def test_the_ledger_gathers_recorded_checks_in_claim_order_and_names_the_missing_ones(tmp_path, capsys):
    from mdrl_lib.cli import main

    def check(claim, name, supported):
        return ClaimCheck(claim=claim, name=name, statement="s", paper="p", measured="m", baseline="b",
                          supported=supported, why="w")

    record_check(tmp_path, check("C4", "shared-routes", False), notebook="02_shared_routes")
    record_check(tmp_path, check("C1", "paper-regime", True), notebook="01_sparse_edits")
    record_check(tmp_path, check("C1", "default-regime", None))
    table = ledger(tmp_path)
    assert list(table["claim"]) == ["C0", "C1", "C1", "C2", "C3", "C4", "C5", "C6", "C7", "K1"]
    assert list(table["verdict"][1:3]) == ["not testable here", "supported"]  # checks of one claim by name
    assert set(table[table["claim"].isin(["C2", "C3", "C5"])]["verdict"]) == {"not measured"}
    assert main(["report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "C4 shared-routes: NOT SUPPORTED  (02_shared_routes)" in out and "7 not measured" in out
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "no run directory" in capsys.readouterr().err


# ---- the artifacts a check was computed from ---------------------------------------------------------

def _kit(run_dir, keys=("base-1a2b", "stage-3c4d")):
    config = SimpleNamespace(scale="toy", seed=7, model=SimpleNamespace(name="toy"))
    return SimpleNamespace(config=config, run_dir=run_dir, requested_keys=lambda: list(keys))


def test_record_check_with_a_kit_records_the_keys_it_was_asked_for(tmp_path):
    path = record_check(_kit(tmp_path / "run"), _check(), notebook="02_shared_routes")
    assert json.loads(path.read_text())["artifacts"] == ["base-1a2b", "stage-3c4d"]
    assert load_check(path).artifacts == ["base-1a2b", "stage-3c4d"]
    assert list(ledger(tmp_path / "run").set_index("claim").loc["C4", "artifacts"]) == ["base-1a2b", "stage-3c4d"]


def test_explicit_artifacts_win_over_the_kits(tmp_path):
    path = record_check(_kit(tmp_path), _check(), artifacts=["routes-9f9f"])
    assert json.loads(path.read_text())["artifacts"] == ["routes-9f9f"]
    assert json.loads(record_check(_kit(tmp_path), _check(), artifacts=[]).read_text())["artifacts"] == []
    with pytest.raises(TypeError, match="cache keys"):
        record_check(tmp_path, _check(), artifacts="routes-9f9f")


def test_without_a_kit_or_requested_keys_no_artifacts_are_recorded(tmp_path):
    assert json.loads(record_check(tmp_path / "a", _check()).read_text())["artifacts"] == []
    older_kit = SimpleNamespace(config=SimpleNamespace(scale="toy", seed=0, model=SimpleNamespace(name="toy")),
                                run_dir=tmp_path / "b")  # a Kit from before requested_keys
    assert json.loads(record_check(older_kit, _check()).read_text())["artifacts"] == []
    assert json.loads(record_check(tmp_path / "c", _check(artifacts=["x-1"])).read_text())["artifacts"] == ["x-1"]


def test_an_old_record_without_artifacts_loads_and_enters_the_ledger(tmp_path):
    path = record_check(tmp_path, _check(), notebook="02_shared_routes")
    record = json.loads(path.read_text())
    del record["artifacts"]
    path.write_text(json.dumps(record))
    check = load_check(path)
    assert check.artifacts == [] and check == _check()
    row = ledger(tmp_path).set_index("claim").loc["C4"]
    assert row["verdict"] == "supported" and list(row["artifacts"]) == []


# ---- the package's layout ----------------------------------------------------------------------------

def test_fractional_domains_is_defined_once_with_the_domains():
    from mdrl_lib.domains.base import DOMAIN_NAMES, FRACTIONAL_DOMAINS

    package = Path(mdrl_lib.__file__).parent
    definition = re.compile(r"^\s*FRACTIONAL_DOMAINS\s*(:|=(?!=))", re.M)
    found = [str(p.relative_to(package)) for p in sorted(package.rglob("*.py"))
             for _ in definition.finditer(p.read_text())]
    assert found == [str(Path("domains") / "base.py")]
    assert FRACTIONAL_DOMAINS == {"code": "fractional", "cw": "fractional"}
    assert set(FRACTIONAL_DOMAINS) <= set(DOMAIN_NAMES)


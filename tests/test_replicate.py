"""The replicate runner: seed lists, the reference seed range, the commands it runs, done markers and resume."""
import json
import sys

import pytest

from mdrl_lib import cli
from mdrl_lib.claims.rules import RULES_VERSION
from mdrl_lib.replicate import (DONE_FILE, ReplicateError, SeedRun, check_reference_seeds, done_record, parse_seeds,
                                replicate, run_seed, seed_dir, seed_runs)


def test_seed_lists_read_ranges_lists_and_mixes_in_order_each_once():
    assert parse_seeds("1000-1003") == [1000, 1001, 1002, 1003]
    assert parse_seeds("1005, 1001,1005") == [1005, 1001]
    assert parse_seeds("1000-1001,1007,1000") == [1000, 1001, 1007]
    for bad in ("a", "1003-1000", "1000-", "1-2-3"):
        with pytest.raises(ReplicateError, match="give a range '1000-1009'"):
            parse_seeds(bad)


def test_only_reference_seeds_are_accepted():
    check_reference_seeds([1000, 1099])
    with pytest.raises(ReplicateError, match="1000-1099.*got 0, 576"):
        check_reference_seeds([0, 1000, 576])
    with pytest.raises(ReplicateError, match="no seeds"):
        check_reference_seeds([])


def test_each_seed_runs_the_toy_pipeline_with_its_seed_and_the_overrides(tmp_path):
    runs = seed_runs([1000, 1001], tmp_path, params=[("rl_seeds", "1")], only=["00"])
    assert [r.seed for r in runs] == [1000, 1001]
    command = list(runs[1].command)
    assert command[:4] == [sys.executable, "-m", "mdrl_lib", "run"]
    assert command[command.index("--run-dir") + 1] == str(tmp_path / "seed-1001")
    assert "-p seed 1001" in " ".join(command) and "-p scale toy" in " ".join(command)
    assert "-p rl_seeds 1" in " ".join(command) and command[-2:] == ["--only", "00"]
    with pytest.raises(ReplicateError, match="-p seed"):
        seed_runs([1000], tmp_path, params=[("seed", "3")])


def test_a_seed_is_done_only_when_its_run_succeeded(tmp_path):
    ok = SeedRun(1000, (sys.executable, "-c", "print('ran')"), seed_dir(tmp_path, 1000), tmp_path / "ok.log")
    bad = SeedRun(1001, (sys.executable, "-c", "raise SystemExit(3)"), seed_dir(tmp_path, 1001), tmp_path / "bad.log")
    record = run_seed(ok, {"rules_version": RULES_VERSION})
    assert record["returncode"] == 0 and done_record(tmp_path, 1000)["seed"] == 1000
    assert "ran" in (tmp_path / "ok.log").read_text()
    assert run_seed(bad, {})["returncode"] == 3 and done_record(tmp_path, 1001) is None
    assert not list(tmp_path.rglob("*.part"))


def test_replicate_skips_the_seeds_done_and_refuses_another_rules_version(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr("mdrl_lib.replicate.run_seed",
                        lambda run, meta: ran.append(run.seed) or {**meta, "seed": run.seed, "returncode": 0,
                                                                    "wall_s": 0.0})
    seed_dir(tmp_path, 1000).mkdir(parents=True)
    (seed_dir(tmp_path, 1000) / DONE_FILE).write_text(json.dumps({"seed": 1000, "rules_version": RULES_VERSION,
                                                                  "returncode": 0, "wall_s": 5.0}))
    records = replicate([1000, 1001, 1002], tmp_path, workers=2, echo=lambda line: None)
    assert sorted(ran) == [1001, 1002] and [r["seed"] for r in records] == [1000, 1001, 1002]
    assert records[0]["wall_s"] == 5.0
    (seed_dir(tmp_path, 1000) / DONE_FILE).write_text(json.dumps({"seed": 1000, "rules_version": "0"}))
    with pytest.raises(ReplicateError, match="rules version 0.*never mixes"):
        replicate([1000], tmp_path, echo=lambda line: None)
    with pytest.raises(ReplicateError, match="--workers"):
        replicate([1001], tmp_path, workers=0, echo=lambda line: None)


def test_the_command_checks_its_input_before_running_anything(tmp_path, capsys):
    assert cli.main(["replicate", "--seeds", "3-4", "--root", str(tmp_path)]) == 2
    assert "1000-1099" in capsys.readouterr().err
    assert cli.main(["replicate", "--seeds", "1000", "--root", str(tmp_path), "-p", "bogus", "1"]) == 2
    assert "unknown parameter 'bogus'" in capsys.readouterr().err
    assert cli.main(["replicate", "--seeds", "1000", "--root", str(tmp_path), "--only", "42"]) == 2
    assert "valid notebooks" in capsys.readouterr().err
    assert cli.main(["replicate", "--seeds", "1000", "--root", str(tmp_path), "-p", "scale", "full"]) == 2
    assert "sets them itself" in capsys.readouterr().err
    assert cli.main(["replicate", "--seeds", "1000-1001", "--root", str(tmp_path)]) == 2
    assert "fewer than the 10 a ledger needs" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())

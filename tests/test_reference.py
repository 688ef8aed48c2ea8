"""The reference ledger: the verdict over seeds (hand-computed binomial cases), the auto pair's keys, effects and
margins, exclusions, version and machine refusals, the file round trip and a reader's run placed on it."""
import json

import pytest

from mdrl_lib import reference as ref
from mdrl_lib.claims.record import ClaimCheck, record_check
from mdrl_lib.claims.rules import RULES_VERSION


def test_the_verdict_over_seeds_follows_the_exact_binomial_rule():
    s, n, u = "supported", "not supported", "not testable here"
    assert ref.reference_verdict([s] * 9 + [n], alpha=0.05, not_testable_share=0.5)[0] == "supported"  # P = 11/1024
    assert ref.reference_verdict([s] * 8 + [n] * 2, alpha=0.05, not_testable_share=0.5)[0] == "inconclusive"  # 56/1024
    assert ref.reference_verdict([s] + [n] * 9, alpha=0.05, not_testable_share=0.5)[0] == "not supported"
    verdict, why = ref.reference_verdict([s] * 9 + [n], alpha=0.01, not_testable_share=0.5)
    assert verdict == "inconclusive" and "0.0107" in why
    # untestable seeds leave the test; more than half of them untestable: the reference cannot test it
    assert ref.reference_verdict([s] * 5 + [u] * 5, alpha=0.05, not_testable_share=0.5)[0] == "supported"  # 1/32
    assert ref.reference_verdict([s] * 4 + [u] * 5 + ["not measured"], alpha=0.05,
                                 not_testable_share=0.5)[0] == "not testable here"
    assert ref.reference_verdict(["supported (outcome only)"] * 10)[0] == "supported (outcome only)"
    assert ref.reference_verdict([])[0] == "not testable here"


def test_the_chosen_pair_is_written_auto_in_c3_and_c7_keys():
    records = [{"claim": "C3", "name": "math-cw-gradients-after-math"}, {"claim": "C3", "name": "math-cw-gradients"}]
    pair = ref.chosen_pair(records)
    assert pair == ("math", "cw")
    assert ref.check_keys({"claim": "C3", "name": "math-cw-gradients"}, pair) == ["C3-math-auto-gradients"]
    assert ref.check_keys({"claim": "C3", "name": "math-cw-gradients-after-math"}, pair) == [
        "C3-math-auto-gradients-after-math"]
    assert ref.check_keys({"claim": "C7", "name": "rollback-math-cw"}, pair) == ["C7-rollback-math-auto"]
    assert ref.check_keys({"claim": "C7", "name": "rollback-math-qa"}, pair) == ["C7-rollback-math-qa"]
    # the fixed second pair chosen by the rule too: one record, both keys
    assert ref.check_keys({"claim": "C7", "name": "rollback-math-qa"}, ("math", "qa")) == [
        "C7-rollback-math-auto", "C7-rollback-math-qa"]
    assert ref.check_keys({"claim": "C4", "name": "shared-routes"}, pair) == ["C4-shared-routes"]
    assert ref.chosen_pair([{"claim": "C4", "name": "shared-routes"}]) is None


def test_effects_thresholds_and_margins():
    figures = {"measured_ratio": 0.2, "bound_ratio": 0.5, "flag": True, "missing": None}
    assert ref.effect_of(figures, {"figure": "measured_ratio", "threshold": "bound_ratio"}) == (0.2, 0.5)
    assert ref.effect_of(figures, {"figure": "measured_ratio", "threshold": 1}) == (0.2, 1.0)
    assert ref.effect_of(figures, {"figure": "flag", "threshold": None}) == (None, None)
    assert ref.effect_of(figures, {"figure": "absent", "threshold": "missing"}) == (None, None)
    assert ref.margin(0.2, 0.5, "at most") == pytest.approx(0.3)
    assert ref.margin(0.2, 0.5, "above") == pytest.approx(-0.3)
    assert ref.margin(None, 0.5, "above") is None
    specs = ref.effect_specs()
    assert specs["C6-gd-contraction-controlled"] == {"figure": "measured_ratio", "threshold": "bound_ratio",
                                                     "side": "at most"}
    assert specs["K1-recovery-front"]["threshold"] is None


def _part(seed, supported=True, effect=0.8, base_failed=(), version=RULES_VERSION):
    check = {"claim": "C5", "regime": "controlled", "verdict": "supported" if supported else "not supported",
             "tested": "mechanism", "effect": effect, "threshold": 0.5, "failed_premises": [], "rules_version": version}
    return {"seed": seed, "pair": ["math", "cw"], "base_failed": list(base_failed),
            "checks": {"C5-second-order-subspace-controlled": check}}


def test_aggregate_counts_verdicts_gives_the_effects_interval_and_lists_exclusions():
    parts = [_part(1000 + i, effect=0.6 + 0.02 * i) for i in range(10)]
    parts.append(_part(1010, base_failed=["math: right number 0.7 (threshold 0.8)"]))
    reference = ref.aggregate(parts, failed_runs={1011: "crashed"}, machine={"cpu": "x"}, min_seeds=10)
    check = reference["checks"]["C5-second-order-subspace-controlled"]
    assert check["verdict"] == "supported" and check["counts"] == {"supported": 10}
    effect = check["effect"]
    assert effect["mean"] == pytest.approx(0.69) and effect["ci_low"] < 0.69 < effect["ci_high"]
    assert effect["margin_mean"] == pytest.approx(0.19) and effect["interval_side"] == "claim's side"
    assert reference["included"] == list(range(1000, 1010))
    assert [e["seed"] for e in reference["excluded"]] == [1011, 1010]
    assert reference["base_preconditions"] == {"met": 10, "of": 11, "share": 10 / 11}
    with pytest.raises(ValueError, match="at least 12"):
        ref.aggregate(parts, min_seeds=12)
    with pytest.raises(ValueError, match="rules version"):
        ref.aggregate([_part(1000, version="1")], min_seeds=1)


def test_a_check_some_seeds_did_not_record_counts_them_as_not_measured():
    parts = [_part(1000), _part(1001), {"seed": 1002, "pair": None, "base_failed": [], "checks": {}}]
    check = ref.aggregate(parts, min_seeds=3)["checks"]["C5-second-order-subspace-controlled"]
    assert check["counts"] == {"supported": 2, "not measured": 1}
    assert check["verdict"] == "inconclusive"  # 2 of 2 testing seeds: P = 1/4


def test_the_file_round_trips_and_refuses_another_rules_version(tmp_path):
    reference = ref.aggregate([_part(1000 + i) for i in range(3)], min_seeds=3)
    path = ref.write_reference(reference, tmp_path / "ledger-v9.json")
    assert ref.load_reference(path) == json.loads(path.read_text())
    assert not list(tmp_path.glob("*.part"))
    path.write_text(json.dumps({**reference, "rules_version": "0"}))
    with pytest.raises(ValueError, match="rules version 0"):
        ref.load_reference(path)
    with pytest.raises(FileNotFoundError, match="mdrl_lib replicate"):
        ref.load_reference(tmp_path / "none.json")
    assert ref.reference_path("3", tmp_path) == tmp_path / "ledger-v3.json"


def test_the_markdown_table_has_a_row_per_check_and_names_the_seeds():
    reference = ref.aggregate([_part(1000 + i) for i in range(3)], machine={"cpu": "EPYC", "torch": "2",
                                                                           "torch_cpu_capability": "AVX512"},
                              min_seeds=3)
    text = ref.reference_markdown(reference)
    assert "| C5-second-order-subspace-controlled | controlled | inconclusive | 3 supported |" in text
    assert "1000, 1001, 1002" in text and "EPYC" in text


def test_a_readers_run_is_placed_on_the_seeds_range(tmp_path):
    reference = ref.aggregate([_part(1000 + i, effect=0.6 + 0.1 * i) for i in range(3)], min_seeds=3)
    check = ClaimCheck(claim="C5", name="second-order-subspace-controlled", statement="s", paper="p", measured="m",
                       baseline="b", supported=True, why="w", figures={"second_order_share": 0.95},
                       regime="controlled")
    record_check(tmp_path, check, "03")
    row = ref.place_run(tmp_path, reference).iloc[0]
    assert row["this run"] == "supported" and row["this run's effect"] == 0.95
    assert row["typical?"] == "outside the seeds' range" and row["seeds' range"] == "0.6 to 0.8"
    empty = ref.place_run(tmp_path / "nothing", reference).iloc[0]
    assert empty["this run"] == "not measured" and empty["typical?"] == "no value"


def _reference_with_run(tmp_path):
    reference = ref.aggregate([_part(1000 + i, effect=0.6 + 0.1 * i) for i in range(3)], min_seeds=3,
                              machine={"cpu": "EPYC"})
    run_dir = tmp_path / "run"
    check = ClaimCheck(claim="C5", name="second-order-subspace-controlled", statement="s", paper="p", measured="m",
                       baseline="b", supported=True, why="w", figures={"second_order_share": 0.7},
                       regime="controlled")
    record_check(run_dir, check, "03")
    return reference, run_dir


def test_the_reference_figure_has_a_panel_per_check_with_an_effect(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from mdrl_lib.plots import plot_reference

    reference, run_dir = _reference_with_run(tmp_path)
    placed = ref.place_run(run_dir, reference)
    fig = plot_reference(reference, placed)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 1 and visible[0].get_ylabel() == "second_order_share"
    assert "reference: inconclusive" in visible[0].get_title()
    assert plot_reference(reference, placed.assign(effect="-")) is None


def test_the_ledger_text_sets_the_run_beside_the_reference_or_says_why_not(tmp_path, monkeypatch):
    from mdrl_lib import cli

    reference, run_dir = _reference_with_run(tmp_path)
    monkeypatch.setattr(ref, "REFERENCE_DIR", tmp_path / "none")
    assert cli.format_beside_reference(run_dir).startswith("No reference to compare with: no reference ledger")
    ref.write_reference(reference, ref.reference_path(folder=tmp_path / "refs"))
    monkeypatch.setattr(ref, "REFERENCE_DIR", tmp_path / "refs")
    text = cli.format_beside_reference(run_dir)
    assert "3 fresh world seeds (1000-1002)" in text and "EPYC" in text
    line = next(l for l in text.splitlines() if "C5-second-order-subspace-controlled" in l)
    assert "supported" in line and "inconclusive" in line and "0.7 (typical: 0.6 to 0.8)" in line
    beside = ref.beside_reference(run_dir, ["C6-gd-contraction"])
    assert beside.table.empty
    with pytest.raises(ValueError, match="unknown claim"):
        ref.beside_reference(run_dir, ["C9"])


def test_figure_ranges_give_count_min_median_max_and_skip_missing_values():
    ranges = ref.figure_ranges([{"a": 1.0, "b": None}, {"a": 3.0, "b": 2}, {"a": 2.0}])
    assert ranges == {"a": {"n": 3, "min": 1.0, "median": 2.0, "max": 3.0},
                      "b": {"n": 1, "min": 2.0, "median": 2.0, "max": 2.0}}
    assert ref.figure_ranges([]) == {}


def test_the_instructor_ranges_list_every_recorded_number_of_a_check():
    parts = [_part(1000 + i, effect=0.6 + 0.1 * i) for i in range(3)]
    for i, part in enumerate(parts):
        part["checks"]["C5-second-order-subspace-controlled"]["figures"] = {"second_order_share": 0.6 + 0.1 * i,
                                                                            "r": 16}
    reference = ref.aggregate(parts, min_seeds=3, machine={"cpu": "EPYC"})
    text = ref.instructor_markdown(reference)
    assert "#### C5-second-order-subspace-controlled [controlled]" in text
    assert "| `second_order_share` | 3 | 0.6 | 0.7 | 0.8 |" in text and "| `r` | 3 | 16 | 16 | 16 |" in text
    assert "3 supported" in text and "1000-1002" in text


def test_seeds_of_other_rules_versions_are_found_and_refused_by_the_command(tmp_path, monkeypatch, capsys):
    from mdrl_lib import cli

    ref.write_reference({"rules_version": "1", "seeds": [1000, 1001]}, tmp_path / "ledger-v1.json")
    ref.write_reference({"seeds": {"1000": 5.0}}, tmp_path / "ledger-v1-costs.json")
    ref.write_reference({"rules_version": ref.RULES_VERSION, "seeds": [1002]},
                        ref.reference_path(folder=tmp_path))
    assert ref.seeds_of_other_versions(folder=tmp_path) == {1000: "1", 1001: "1"}
    monkeypatch.setattr(ref, "REFERENCE_DIR", tmp_path)
    assert cli.main(["replicate", "--seeds", "1001-1003", "--root", str(tmp_path / "root")]) == 2
    assert "1001 (version 1)" in capsys.readouterr().err and not (tmp_path / "root").exists()

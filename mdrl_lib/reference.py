"""The reference ledger: every claim check over fresh world seeds, judged by the rules file's ``[reference]`` rule,
and a reader's run placed on it.

:func:`build_reference` reads the seeds :mod:`mdrl_lib.replicate` ran and writes, per check, each seed's verdict,
effect and failed premises, the count of seeds per verdict, the effect's mean with its t-interval over seeds, and
the reference verdict (:func:`reference_verdict`). The file (``docs/reference/ledger-v<rules version>.json``) holds
nothing that varies between two runs on one CPU (no times, no paths), so two runs give identical files; the
seeds' wall times go to a separate costs file. :func:`place_run` and :func:`~mdrl_lib.plots.plot_reference` set a
reader's run beside it; every notebook's claim section and ``python -m mdrl_lib report`` show both. Introduced in
the README's "The verdicts over fresh seeds".
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from mdrl_lib.claims.record import CLAIM_IDS, CLAIMS_DIR, KIT_CLAIM_IDS, load_check
from mdrl_lib.claims.rules import RULES_VERSION, rule

REFERENCE_DIR = Path(__file__).resolve().parent.parent / "docs" / "reference"
TESTED_VERDICTS = ("supported", "supported (outcome only)", "not supported")
SIDES = ("above", "at least", "below", "at most")
COUNT_ORDER = (*TESTED_VERDICTS, "not testable here", "not measured")  # how a check's seed counts are listed
_PAIR_CHECK = re.compile(r"^(?P<a>[a-z]+)-(?P<b>[a-z]+)-gradients$")


def reference_path(version: str = RULES_VERSION, folder: str | Path | None = None) -> Path:
    """Where the reference ledger of rules ``version`` lives: ``docs/reference/ledger-v<version>.json`` (under
    ``folder`` when given)."""
    return Path(REFERENCE_DIR if folder is None else folder) / f"ledger-v{version}.json"


def seeds_of_other_versions(version: str = RULES_VERSION, folder: str | Path | None = None) -> dict[int, str]:
    """World seeds already used by a committed reference of another rules version (seed -> that version): a new
    rules version is confirmed on seeds no earlier reference has looked at."""
    used: dict[int, str] = {}
    for path in sorted(Path(REFERENCE_DIR if folder is None else folder).glob("ledger-v*.json")):
        other = path.stem.removeprefix("ledger-v")
        if other == version or other.endswith("-costs"):
            continue
        for seed in json.loads(path.read_text()).get("seeds", []):
            used[int(seed)] = other
    return used


def effect_specs() -> dict[str, dict[str, Any]]:
    """The rules file's ``[reference.effects]``: per check key, the figure shown as its effect, its threshold
    (a number, the name of another figure of the record, or ``None``) and the side the claim predicts."""
    specs = {}
    for key, spec in rule("reference", "effects").items():
        if spec["side"] not in SIDES:
            raise ValueError(f"[reference.effects] {key}: side must be one of {', '.join(SIDES)}, got {spec['side']!r}")
        threshold = spec.get("threshold", "")
        specs[key] = {"figure": spec["figure"], "threshold": None if threshold == "" else threshold,
                      "side": spec["side"]}
    return specs


def chosen_pair(records: Sequence[Mapping[str, Any]]) -> tuple[str, str] | None:
    """The pair (A, B) the pairs rule chose on a seed, read from its C3 check at the base (``"math-cw-gradients"``);
    ``None`` when the seed has no such record."""
    for record in records:
        match = _PAIR_CHECK.match(record["name"]) if record["claim"] == "C3" else None
        if match:
            return match["a"], match["b"]
    return None


def check_keys(record: Mapping[str, Any], pair: tuple[str, str] | None) -> list[str]:
    """The reference keys a record counts for: ``"<claim>-<name>"``, with the later domain of the seed's chosen
    ``pair`` written ``auto`` in C3's and C7's checks (``C7-rollback-math-cw`` on a seed whose chosen pair is
    (math, cw) is ``C7-rollback-math-auto``). A C7 check of a fixed pair that is also the chosen one counts for
    both keys."""
    key = f"{record['claim']}-{record['name']}"
    if pair is None or record["claim"] not in ("C3", "C7"):
        return [key]
    a, b = pair
    auto = key.replace(f"-{a}-{b}-", f"-{a}-auto-")
    if key.endswith(f"-{a}-{b}"):
        auto = key[: -len(f"-{a}-{b}")] + f"-{a}-auto"
    if auto == key:
        return [key]
    return [auto, key] if record["claim"] == "C7" and key in effect_specs() else [auto]


def effect_of(figures: Mapping[str, Any], spec: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """The effect and threshold of one record's ``figures`` under its ``spec`` (:func:`effect_specs`);
    ``None`` for a figure the record lacks or holds as a non-number."""
    def number(value: Any) -> float | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return float(value) if math.isfinite(value) else None

    threshold = spec["threshold"]
    if isinstance(threshold, str):
        threshold = number(figures.get(threshold))
    elif threshold is not None:
        threshold = float(threshold)
    return number(figures.get(spec["figure"])), threshold


def margin(effect: float | None, threshold: float | None, side: str) -> float | None:
    """How far ``effect`` lies on the claim's side of ``threshold`` (positive: on the claim's side; negative: on
    the other side); ``None`` without both numbers."""
    if effect is None or threshold is None:
        return None
    return effect - threshold if side in ("above", "at least") else threshold - effect


def reference_verdict(verdicts: Sequence[str], *, alpha: float | None = None,
                      not_testable_share: float | None = None) -> tuple[str, str]:
    """The verdict over seeds from each included seed's verdict (``"not measured"`` counts as untestable), by the
    rules file's ``[reference]`` rule: "not testable here" when more than ``not_testable_share`` of them could not
    test the check; otherwise, with k of the m testing seeds supporting it, "supported" when a one-sided exact
    binomial test of k against m/2 rejects at ``alpha`` (P(X >= k) <= alpha), "not supported" when P(X <= k) <=
    alpha, "inconclusive" otherwise; "supported (outcome only)" when a supporting seed tested the outcome only.
    Returns (verdict, why)."""
    from scipy.stats import binom

    alpha = rule("reference", "alpha") if alpha is None else alpha
    not_testable_share = rule("reference", "not_testable_share") if not_testable_share is None else not_testable_share
    n = len(verdicts)
    if n == 0:
        return "not testable here", "no included seed recorded this check"
    untested = sum(v not in TESTED_VERDICTS for v in verdicts)
    if untested > not_testable_share * n:
        return "not testable here", (f"{untested} of {n} seeds could not test it (more than "
                                     f"{not_testable_share:g} of them)")
    m = n - untested
    k = sum(v.startswith("supported") for v in verdicts)
    p_supported, p_not = float(binom.sf(k - 1, m, 0.5)), float(binom.cdf(k, m, 0.5))
    counted = f"{k} of the {m} seeds that tested it support it"
    if p_supported <= alpha:
        verdict = "supported (outcome only)" if "supported (outcome only)" in verdicts else "supported"
        return verdict, f"{counted}: P(X >= {k}) = {p_supported:.3g} <= {alpha:g} under a coin"
    if p_not <= alpha:
        return "not supported", f"{counted}: P(X <= {k}) = {p_not:.3g} <= {alpha:g} under a coin"
    return "inconclusive", (f"{counted}: neither P(X >= {k}) = {p_supported:.3g} nor P(X <= {k}) = {p_not:.3g} is "
                            f"at most {alpha:g}")


def seed_records(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every claim record of a run directory (the JSON files under ``claims/``), sorted by file name, each
    checked by :func:`~mdrl_lib.claims.record.load_check` and returned as the stored dict."""
    folder = Path(run_dir) / CLAIMS_DIR
    if not folder.is_dir():
        raise FileNotFoundError(f"no claim records under {folder}: has this seed's run finished?")
    records = []
    for path in sorted(folder.glob("*-*.json")):
        if path.name.split("-")[0] in CLAIM_IDS:
            load_check(path)
            records.append(json.loads(path.read_text()))
    return records


def base_failures(run_dir: str | Path, seed: int) -> list[str]:
    """The preconditions of notebook 00 the seed's base misses (empty: it meets them all), read from the run's
    store (:func:`~mdrl_lib.claims.nb00.base_precondition_table`)."""
    from mdrl_lib.claims.nb00 import base_precondition_table
    from mdrl_lib.config import RunConfig
    from mdrl_lib.kit import open_kit

    kit = open_kit(RunConfig.from_params(scale="toy", seed=seed, run_dir=str(run_dir)))
    table = base_precondition_table(kit)
    return [f"{row.check}: {row.value:.3f} (threshold {row.threshold})"
            for row in table.itertuples() if not bool(row.holds)]


def summarise_seed(seed: int, records: Sequence[Mapping[str, Any]], base_failed: Sequence[str]) -> dict[str, Any]:
    """One seed's part of the reference: its chosen pair, its base's failed preconditions and, per check key,
    the verdict, effect, threshold, failed premises and numeric figures of its record."""
    pair = chosen_pair(records)
    specs = effect_specs()
    checks: dict[str, dict[str, Any]] = {}
    for record in records:
        for key in check_keys(record, pair):
            spec = specs.get(key)
            effect, threshold = effect_of(record["figures"], spec) if spec else (None, None)
            numbers = {name: value for name, value in record["figures"].items()
                       if isinstance(value, (int, float)) and not isinstance(value, bool)}
            checks[key] = {"claim": record["claim"], "regime": record.get("regime", ""),
                           "verdict": record["verdict"], "tested": record.get("tested", "mechanism"),
                           "effect": effect, "threshold": threshold, "figures": numbers,
                           "failed_premises": [p["name"] for p in record.get("premises", []) if not p["holds"]],
                           "rules_version": record.get("rules_version", "")}
    return {"seed": seed, "pair": list(pair) if pair else None, "base_failed": list(base_failed), "checks": checks}


def figure_ranges(figures: Sequence[Mapping[str, float]]) -> dict[str, dict[str, float | int]]:
    """Per numeric figure of a check's records over seeds: how many seeds have it, its minimum, median and maximum
    (the ranges the instructor's guide prints). Figures that are ``None`` on a seed are left out there."""
    import numpy as np

    names = sorted({name for f in figures for name, value in f.items() if value is not None})
    ranges = {}
    for name in names:
        values = np.array([f[name] for f in figures if f.get(name) is not None], dtype=float)
        ranges[name] = {"n": int(values.size), "min": float(values.min()), "median": float(np.median(values)),
                        "max": float(values.max())}
    return ranges


def _check_order(key: str) -> tuple:
    """Claim order (C0-C7, then the kit's own K1), then the key."""
    order = (*CLAIM_IDS, *KIT_CLAIM_IDS)
    claim = key.split("-")[0]
    return (order.index(claim) if claim in order else len(order), key)


def aggregate(seeds: Sequence[Mapping[str, Any]], *, failed_runs: Mapping[int, str] | None = None,
              machine: Mapping[str, Any] | None = None, command: str = "", commit: str = "",
              version: str = RULES_VERSION, min_seeds: int | None = None) -> dict[str, Any]:
    """The reference ledger from :func:`summarise_seed` parts (and the seeds whose run failed, by reason).

    A seed is excluded when its run failed or its base misses a precondition (the ``[reference]`` rule); every
    check's verdict comes from :func:`reference_verdict` over the included seeds, and its effect's mean and
    t-interval (:func:`~mdrl_lib.stats.seed_mean_interval`) from those with a value. Raises ``ValueError`` when a
    seed's records were judged by another rules version, or fewer than ``min_seeds`` seeds remain (default: the
    rules file's ``[reference] min_seeds``)."""
    from mdrl_lib.stats import seed_mean_interval

    failed_runs = dict(failed_runs or {})
    level, specs = rule("reference", "level"), effect_specs()
    for part in seeds:
        versions = {c["rules_version"] for c in part["checks"].values()}
        if versions - {version}:
            raise ValueError(f"seed {part['seed']} holds records of rules version(s) {sorted(versions - {version})}, "
                             f"the reference is version {version}: a reference never mixes versions")
    excluded = [{"seed": s, "reason": f"the run failed: {why}"} for s, why in sorted(failed_runs.items())]
    excluded += [{"seed": p["seed"], "reason": "the base misses a precondition: " + "; ".join(p["base_failed"])}
                 for p in seeds if p["base_failed"]]
    included = [p for p in seeds if not p["base_failed"]]
    min_seeds = rule("reference", "min_seeds") if min_seeds is None else min_seeds
    if len(included) < min_seeds:
        raise ValueError(f"{len(included)} seed(s) are included, at least {min_seeds} are needed; excluded: "
                         + ("; ".join(f"{e['seed']} ({e['reason']})" for e in excluded) or "none"))
    keys = sorted({k for p in included for k in p["checks"]}, key=_check_order)
    checks = {}
    for key in keys:
        rows = [{"seed": p["seed"], **p["checks"].get(key, {"verdict": "not measured", "effect": None,
                                                            "threshold": None, "failed_premises": []})}
                for p in included]
        present = [p["checks"][key] for p in included if key in p["checks"]]
        spec = specs.get(key)
        verdict, why = reference_verdict([r["verdict"] for r in rows])
        counts = {v: sum(r["verdict"] == v for r in rows) for v in COUNT_ORDER}
        effects = [r["effect"] for r in rows if r.get("effect") is not None]
        interval = seed_mean_interval(effects, level) if len(effects) >= 2 else None
        margins = [margin(r.get("effect"), r.get("threshold"), spec["side"]) for r in rows] if spec else []
        margins = [m for m in margins if m is not None]
        margin_interval = seed_mean_interval(margins, level) if len(margins) >= 2 else None
        if margin_interval is None:
            side = "no threshold"
        elif margin_interval.ci_low > 0:
            side = "claim's side"
        elif margin_interval.ci_high < 0:
            side = "other side"
        else:
            side = "straddles"
        checks[key] = {
            "claim": present[0]["claim"], "regime": present[0]["regime"], "tested": present[0]["tested"],
            "verdict": verdict, "why": why, "counts": {k: v for k, v in counts.items() if v},
            "effect": {**(spec or {"figure": None, "threshold": None, "side": None}),
                       "n": len(effects), "mean": interval.mean if interval else (effects[0] if effects else None),
                       "ci_low": interval.ci_low if interval else None,
                       "ci_high": interval.ci_high if interval else None,
                       "margin_mean": margin_interval.mean if margin_interval else None,
                       "margin_ci_low": margin_interval.ci_low if margin_interval else None,
                       "margin_ci_high": margin_interval.ci_high if margin_interval else None,
                       "interval_side": side},
            "seeds": [{k: r.get(k) for k in ("seed", "verdict", "effect", "threshold", "failed_premises")}
                      for r in rows],
            "figure_ranges": figure_ranges([r.get("figures", {}) for r in rows]),
        }
    return {"rules_version": version, "level": level, "min_seeds": min_seeds, "alpha": rule("reference", "alpha"),
            "rule": "[reference] in mdrl_lib/claims/rules.toml", "command": command, "commit": commit,
            "machine": dict(machine or {}),
            "seeds": sorted([int(p["seed"]) for p in seeds] + [int(s) for s in failed_runs]),
            "included": [int(p["seed"]) for p in included], "excluded": excluded,
            "base_preconditions": {"met": len(included), "of": len(seeds),
                                   "share": len(included) / len(seeds) if seeds else None},
            "pairs": {str(p["seed"]): p["pair"] for p in seeds},
            "checks": checks}


def build_reference(root: str | Path, seeds: Sequence[int], *, command: str = "", commit: str = "",
                    min_seeds: int | None = None) -> dict[str, Any]:
    """The reference ledger of the seeds :func:`mdrl_lib.replicate.replicate` ran under ``root``: a seed without
    its ``done.json`` counts as a failed run. The machine is the one the seeds' ``done.json`` name (they must
    agree: a reference never mixes CPUs)."""
    from mdrl_lib.replicate import done_record, seed_dir

    parts, failed, machines = [], {}, []
    for seed in seeds:
        done = done_record(root, seed)
        if done is None:
            failed[int(seed)] = f"no done.json under {seed_dir(root, seed).name} (see its log)"
            continue
        machines.append(done.get("machine", {}))
        commit = commit or done.get("commit", "")
        run_dir = seed_dir(root, seed)
        parts.append(summarise_seed(int(seed), seed_records(run_dir), base_failures(run_dir, int(seed))))
    distinct = {json.dumps(m, sort_keys=True) for m in machines}
    if len(distinct) > 1:
        raise ValueError(f"the seeds under {root} ran on {len(distinct)} different machines: "
                         f"{sorted(distinct)}; a reference comes from one")
    return aggregate(parts, failed_runs=failed, machine=machines[0] if machines else {}, command=command,
                     commit=commit, min_seeds=min_seeds)


def write_reference(reference: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``reference`` as sorted, indented JSON, atomically (the kit's one JSON writer,
    :func:`mdrl_lib.store.write_json_atomic`), creating its folder."""
    from mdrl_lib.store import write_json_atomic

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, reference)
    return path


def load_reference(path: str | Path | None = None) -> dict[str, Any]:
    """The reference ledger at ``path`` (default: this rules version's, :func:`reference_path`). Raises
    ``FileNotFoundError`` naming the command that builds it, or ``ValueError`` for a file of another rules
    version than this kit's."""
    path = reference_path() if path is None else Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no reference ledger at {path}; build one with "
                                "`python -m mdrl_lib replicate --seeds 1000-1009 --workers 2`")
    reference = json.loads(path.read_text())
    if reference.get("rules_version") != RULES_VERSION:
        raise ValueError(f"{path} was judged by rules version {reference.get('rules_version')}, this kit's rules are "
                         f"version {RULES_VERSION}: its verdicts do not apply to this kit's checks")
    return reference


def reference_table(reference: Mapping[str, Any]) -> pd.DataFrame:
    """One row per check of a reference: check, regime, verdict, seeds (counts per verdict), effect (the figure's
    mean with its interval over seeds), threshold and where the interval of the margin lies."""
    rows = []
    for key, check in reference["checks"].items():
        effect = check["effect"]
        counts = ", ".join(f"{check['counts'][v]} {v}" for v in COUNT_ORDER if check["counts"].get(v))
        if effect["mean"] is None:
            shown = "-"
        elif effect["ci_low"] is None:
            shown = f"{effect['mean']:.3g}"
        else:
            shown = f"{effect['mean']:.3g} [{effect['ci_low']:.3g}, {effect['ci_high']:.3g}]"
        threshold = effect["threshold"]
        rows.append({"check": key, "regime": check["regime"], "reference verdict": check["verdict"],
                     "seeds": counts, "effect": f"{effect['figure']}: {shown}" if effect["figure"] else "-",
                     "threshold": "-" if threshold is None else f"{effect['side']} {threshold}",
                     "interval": effect["interval_side"]})
    return pd.DataFrame(rows, columns=["check", "regime", "reference verdict", "seeds", "effect", "threshold",
                                       "interval"])


def place_run(run_dir: str | Path, reference: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """A reader's run beside the reference: per reference check, this run's verdict and effect, the reference's
    verdict, the seeds' effect range and whether this run is typical (its effect within the range of the reference
    seeds' effects; "no value" without one). Checks this run did not record read "not measured"; a verdict judged
    by another rules version than the reference's says so ("supported (rules v2)")."""
    reference = load_reference() if reference is None else reference
    records = seed_records(run_dir) if (Path(run_dir) / CLAIMS_DIR).is_dir() else []
    pair = chosen_pair(records)
    mine = {key: record for record in records for key in check_keys(record, pair)}
    rows = []
    for key, check in reference["checks"].items():
        values = [s["effect"] for s in check["seeds"] if s["effect"] is not None]
        record = mine.get(key)
        effect = None
        if record is not None and check["effect"]["figure"]:
            effect, _ = effect_of(record["figures"], check["effect"])
        if effect is None or not values:
            typical = "no value"
        else:
            typical = "typical" if min(values) <= effect <= max(values) else "outside the seeds' range"
        verdict = record["verdict"] if record else "not measured"
        if record and record.get("rules_version") != reference["rules_version"]:
            verdict += f" (rules v{record.get('rules_version')})"
        rows.append({"check": key, "regime": check["regime"], "this run": verdict,
                     "reference": check["verdict"], "effect": check["effect"]["figure"] or "-",
                     "this run's effect": effect,
                     "seeds' range": f"{min(values):.3g} to {max(values):.3g}" if values else "-",
                     "typical?": typical})
    return pd.DataFrame(rows)


def reference_markdown(reference: Mapping[str, Any]) -> str:
    """The README's claims table, generated from a reference file (a test keeps the README in step)."""
    table = reference_table(reference)
    lines = ["| check | rung | reference verdict | seeds | effect: mean [95% interval over seeds] | threshold |",
             "|---|---|---|---|---|---|"]
    for row in table.to_dict("records"):
        lines.append(f"| {row['check']} | {row['regime'] or '-'} | {row['reference verdict']} | {row['seeds']} | "
                     f"{row['effect']} | {row['threshold']} |")
    seeds = reference["included"]
    lines.append("")
    lines.append(f"Rules version {reference['rules_version']}; {len(seeds)} world seeds included "
                 f"({', '.join(map(str, seeds))}), {len(reference['excluded'])} excluded; machine: "
                 f"{reference['machine'].get('cpu', '?')}, torch {reference['machine'].get('torch', '?')} "
                 f"({reference['machine'].get('torch_cpu_capability', '?')}).")
    return "\n".join(lines)


@dataclass(frozen=True)
class Beside:
    """A run's checks beside the reference (:func:`beside_reference`): ``reference`` (``None`` when this kit has no
    reference for its rules version), ``table`` (:func:`place_run`'s rows for the asked claims; ``None`` without a
    reference) and ``message`` (what the reference is, or why there is none)."""

    reference: dict[str, Any] | None
    table: pd.DataFrame | None
    message: str


def beside_reference(run_dir: str | Path, claims: Sequence[str], path: str | Path | None = None) -> Beside:
    """This run's checks of ``claims`` placed on the reference (:func:`place_run`), with a message naming the
    reference's seeds, machine and rule; a missing reference or one of another rules version gives a message, not
    an error (a notebook goes on without it). ``claims``: claim ids (``"C5"``) or key prefixes
    (``"C6-gd-contraction"``: notebook 03's C6 checks, not notebook 05's refresh). Every notebook's claim section
    shows it."""
    unknown = sorted({c.split("-")[0] for c in claims} - set(CLAIM_IDS) - set(KIT_CLAIM_IDS))
    if unknown:
        raise ValueError(f"unknown claim(s) {unknown}; valid claims: {', '.join((*CLAIM_IDS, *KIT_CLAIM_IDS))}")
    try:
        reference = load_reference(path)
    except (FileNotFoundError, ValueError) as error:
        return Beside(None, None, f"No reference to compare with: {error}")
    table = place_run(run_dir, reference)
    table = table[table["check"].map(lambda key: any(key == c or key.startswith(c + "-") for c in claims))]
    table = table.reset_index(drop=True)
    machine = reference.get("machine", {})
    seeds = reference["included"]
    message = (f"Reference (rules version {reference['rules_version']}): {len(seeds)} fresh world seeds "
               f"({seeds[0]}-{seeds[-1]}), default parameters, on {machine.get('cpu', '?')} "
               f"({machine.get('torch_cpu_capability', '?')}, torch {machine.get('torch', '?')}). A verdict over seeds "
               f"is 'supported' when a one-sided binomial test at {reference['alpha']:g} says more seeds support the "
               "check than a coin would, 'not supported' when fewer, 'inconclusive' otherwise. This run is "
               "'typical' when its effect lies within the seeds' range.")
    return Beside(reference, table, message)


def instructor_markdown(reference: Mapping[str, Any]) -> str:
    """The instructor's guide's expected values: per check, the count of reference seeds per verdict and the range
    (minimum, median, maximum over the included seeds) of every number the check records and prints."""
    def number(value: float) -> str:
        return f"{value:.3g}"

    seeds = reference["included"]
    lines = [f"Over the {len(seeds)} reference seeds ({seeds[0]}-{seeds[-1]}; rules version "
             f"{reference['rules_version']}; {reference['machine'].get('cpu', '?')}). A student's run on another "
             "world seed or CPU should usually fall inside these ranges; a value outside them is unusual, not wrong.",
             ""]
    for key, check in reference["checks"].items():
        counts = ", ".join(f"{check['counts'][v]} {v}" for v in COUNT_ORDER if check["counts"].get(v))
        lines += [f"#### {key}" + (f" [{check['regime']}]" if check["regime"] else ""), "",
                  f"Verdicts over seeds: {counts}; reference verdict: **{check['verdict']}**.", "",
                  "| figure | seeds | min | median | max |", "|---|---|---|---|---|"]
        for name, span in check.get("figure_ranges", {}).items():
            lines.append(f"| `{name}` | {span['n']} | {number(span['min'])} | {number(span['median'])} | "
                         f"{number(span['max'])} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"

"""The record of a claim check: what one notebook found about one of the paper's claims, on its own run.

Introduced in notebook ``02_shared_routes``. A :class:`ClaimCheck` holds the claim, the paper's figure, this
run's figure, the baseline or control it was held against, the premises it rests on (each measured, with its
threshold from the rules file), a verdict (``True``, ``False``, or ``None`` when this run cannot test it: a
failed premise forces ``None``), whether it tested the claim's mechanism or only its outcome, its caveats,
why, and the cache keys of the artifacts it was computed from.
:func:`record_check` writes it to ``<run_dir>/claims/<claim>-<name>.json`` so that :func:`ledger` can
gather every notebook's checks.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from mdrl_lib.store import write_json_atomic

CLAIMS_DIR = "claims"
# C0 is the task-level observation the paper starts from (a later domain's RL lowers an earlier domain);
# C1-C7 are the claims that explain it. K1 is the kit's own comparison, not a claim of the paper (notebook
# 06_recovery_methods: is the single refresh on the Pareto front of the recovery methods?); the ledger lists it
# after C7, with its rule fixed in the rules file's [K1] section before the run like the paper's claims.
CLAIM_IDS: tuple[str, ...] = ("C0", "C1", "C2", "C3", "C4", "C5", "C6", "C7", "K1")
KIT_CLAIM_IDS: tuple[str, ...] = ("K1",)  # the kit's own comparisons (not the paper's claims)
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
TESTED = ("mechanism", "outcome")  # what a check tested: the claim's mechanism, or only the outcome it predicts
# The rungs of notebook 03's ladder, where a theory check (C5, C6) is judged: the quadratic world (premises true by
# construction), the controlled two-task network (premises designed to hold, and measured), the toy LM in a local
# regime (a small-rate B stage) and at its default rate. "" for checks that are not judged on a rung.
REGIMES: tuple[str, ...] = ("quadratic", "controlled", "local LM", "default LM")
# The four verdicts, in the order a ledger counts them.
VERDICTS: tuple[str, ...] = ("supported", "supported (outcome only)", "not supported", "not testable here")


def premise(name: str, value: Any, threshold: Any, holds: bool) -> dict[str, Any]:
    """One premise of a claim check as its record stores it: ``{name, value, threshold, holds}``.

    ``name``: what must hold, in words with its direction (``"stationarity: ||grad L_A|| on S / (mu ||P_S
    delta_B||) <= threshold"``); ``value``: the measured number (or a short string); ``threshold``: the
    rules file's bound; ``holds``: whether the measured value meets it. Introduced in notebook ``03``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a premise needs a non-empty name, got {name!r}")
    if not isinstance(holds, bool) and not (hasattr(holds, "dtype") and str(holds.dtype) == "bool"):
        raise TypeError(f"premise {name!r}: holds must be a bool, got {holds!r}")
    return {"name": name, "value": _plain(value), "threshold": _plain(threshold), "holds": bool(holds)}


def _premises(premises: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(premises, (str, bytes, Mapping)):
        raise TypeError(f"premises must be a list of premise dicts, got {premises!r}")
    out = []
    for p in premises:
        missing = {"name", "value", "threshold", "holds"} - set(p)
        if missing:
            raise ValueError(f"premise {p!r} lacks {sorted(missing)}; build it with premise(name, value, threshold, holds)")
        out.append(premise(p["name"], p["value"], p["threshold"], p["holds"]))
    return out


def premises_text(premises: Sequence[Mapping[str, Any]]) -> str:
    """Premises in words, failed ones first marked ``FAILS``: ``"stationarity ...: 3.61 (threshold 0.1) FAILS"``."""
    def value(v: Any) -> str:
        return f"{v:.3g}" if isinstance(v, float) else str(v)
    ordered = sorted(premises, key=lambda p: p["holds"])
    return "; ".join(f"{p['name']}: {value(p['value'])} (threshold {value(p['threshold'])}) "
                     f"{'holds' if p['holds'] else 'FAILS'}" for p in ordered)


@dataclass(frozen=True)
class ClaimCheck:
    """One claim held against one run.

    ``claim``: the paper's claim id (``"C3"``); ``name``: a short slug naming this check
    (``"math-qa-gradients"``), unique per claim; ``statement``: the claim in words; ``paper``: the
    paper's figure; ``measured``: this run's figure, in words with its numbers; ``baseline``: what it
    was held against (chance, a control, a noise floor); ``supported``: the verdict (``None``: not
    testable on this run); ``why``: the rule and which part of it decided; ``figures``: the numbers
    behind the verdict by name (floats, ints, strings or None), for a ledger to tabulate; ``artifacts``:
    the cache keys of the artifacts the check was computed from (filled in by :func:`record_check` from
    the kit; empty for a record written before the field existed or against a bare run directory);
    ``premises``: what must hold for the check to mean anything (:func:`premise` dicts); ``tested``:
    ``"mechanism"`` when the check tested the claim's mechanism, ``"outcome"`` when only the outcome it
    predicts; ``caveats``: what a reader must know about a verdict (one domain, one seed, the best of
    several settings, a schedule it depends on); ``regime``: the rung of notebook 03's ladder the check was
    judged on (one of :data:`REGIMES`; ``""`` when it is not a theory check on a rung), shown as ``[regime]``.

    A failed premise makes the verdict "not testable here" whatever the rule said: ``supported`` becomes
    ``None``, ``why`` starts with the failed premises and the verdict the rule would have given is kept in
    ``figures["verdict_if_premises_held"]``.
    """

    claim: str
    name: str
    statement: str
    paper: str
    measured: str
    baseline: str
    supported: bool | None
    why: str
    figures: dict[str, Any] = field(default_factory=dict)
    artifacts: list[str] = field(default_factory=list)
    premises: list[dict[str, Any]] = field(default_factory=list)
    tested: str = "mechanism"
    caveats: list[str] = field(default_factory=list)
    regime: str = ""

    def __post_init__(self) -> None:
        if self.claim not in CLAIM_IDS:
            raise ValueError(f"unknown claim {self.claim!r}; valid claims: {', '.join(CLAIM_IDS)}")
        if not (isinstance(self.name, str) and _NAME.match(self.name)):
            raise ValueError(f"check name {self.name!r} must be a lowercase slug of letters, digits and '-'")
        if self.supported not in (True, False, None):
            raise TypeError(f"supported must be True, False or None, got {self.supported!r}")
        if self.tested not in TESTED:
            raise ValueError(f"tested must be one of {', '.join(TESTED)}, got {self.tested!r}")
        if self.regime not in ("", *REGIMES):
            raise ValueError(f"regime must be one of {', '.join(REGIMES)} (or '' off the ladder), got {self.regime!r}")
        if isinstance(self.caveats, (str, bytes)) or not all(isinstance(c, str) and c for c in self.caveats):
            raise TypeError(f"caveats must be a list of non-empty strings, got {self.caveats!r}")
        object.__setattr__(self, "caveats", list(self.caveats))
        object.__setattr__(self, "figures", {k: _plain(v) for k, v in dict(self.figures).items()})
        object.__setattr__(self, "artifacts", _keys(self.artifacts))
        object.__setattr__(self, "premises", _premises(self.premises))
        failed = [p for p in self.premises if not p["holds"]]
        if failed and self.supported is not None:
            would = self.verdict
            object.__setattr__(self, "figures", {**self.figures, "verdict_if_premises_held": would})
            object.__setattr__(self, "supported", None)
            object.__setattr__(self, "why", f"not testable here: {premises_text(failed)}. Had the premises held, the "
                                            f"rule would have said {would}: {self.why}")

    @property
    def verdict(self) -> str:
        """One of :data:`VERDICTS`: ``supported`` (``supported (outcome only)`` when only the outcome was
        tested), ``not supported`` or ``not testable here``, as a table shows it."""
        if self.supported is None:
            return "not testable here"
        if self.supported:
            return "supported" if self.tested == "mechanism" else "supported (outcome only)"
        return "not supported"

    @property
    def label(self) -> str:
        """The check as a ledger names it: ``C5 second-order-subspace [controlled]`` (no bracket off the ladder)."""
        return f"{self.claim} {self.name}" + (f" [{self.regime}]" if self.regime else "")

    @property
    def failed_premises(self) -> list[dict[str, Any]]:
        """The premises that do not hold (empty when all hold or none were measured)."""
        return [p for p in self.premises if not p["holds"]]

    def as_dict(self) -> dict:
        return asdict(self)


def _plain(value: Any) -> Any:
    """A JSON-ready number or string: numpy and torch scalars become Python ones, nan becomes None."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"a claim figure must be a number, a string or None, got {value!r} ({type(value).__name__})")


def _keys(artifacts: Sequence[str]) -> list[str]:
    """``artifacts`` as a list of cache keys; a single string or a non-string key is refused."""
    if isinstance(artifacts, (str, bytes)) or not all(isinstance(k, str) for k in artifacts):
        raise TypeError(f"artifacts must be a sequence of cache keys (strings), got {artifacts!r}")
    return list(artifacts)


def claim_path(run_dir: str | Path, check: ClaimCheck) -> Path:
    """Where ``check`` is recorded: ``<run_dir>/claims/<claim>-<name>.json``."""
    return Path(run_dir) / CLAIMS_DIR / f"{check.claim}-{check.name}.json"


def record_check(kit_or_run_dir, check: ClaimCheck, notebook: str = "", *,
                 artifacts: Sequence[str] | None = None) -> Path:
    """Write ``check`` as JSON to ``<run_dir>/claims/<claim>-<name>.json`` and return the path.

    ``kit_or_run_dir``: a :class:`~mdrl_lib.kit.Kit` (its run directory and configuration are recorded
    with the check, and the keys of every artifact it was asked for, :meth:`Kit.requested_keys`, as the
    check's ``artifacts``) or a run directory (``artifacts`` then stay those of ``check``). An explicit
    ``artifacts`` (cache keys) overrides both. The file is written atomically (a temporary file in the same
    directory, then renamed over the old one), so a reader never sees half a record and a rerun replaces
    the previous verdict. Introduced in ``02_shared_routes``.
    """
    if not isinstance(check, ClaimCheck):
        raise TypeError(f"expected a ClaimCheck, got {type(check).__name__}")
    config = getattr(kit_or_run_dir, "config", None)
    run_dir = Path(getattr(kit_or_run_dir, "run_dir", kit_or_run_dir))
    if artifacts is None:
        requested = getattr(kit_or_run_dir, "requested_keys", None)
        artifacts = requested() if callable(requested) else check.artifacts
    check = replace(check, artifacts=artifacts)
    from mdrl_lib.claims.rules import RULES_VERSION

    record = {**check.as_dict(), "verdict": check.verdict, "notebook": notebook, "rules_version": RULES_VERSION,
              "recorded": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if config is not None:
        record["run"] = {"scale": config.scale, "seed": config.seed, "model": config.model.name}
    path = claim_path(run_dir, check)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, record)
    return path


def load_check(path: str | Path) -> ClaimCheck:
    """The :class:`ClaimCheck` recorded at ``path`` (the extra fields of the record are dropped; a record
    written before ``artifacts``, ``premises``, ``tested`` or ``caveats`` existed loads with their defaults)."""
    record = json.loads(Path(path).read_text())
    names = ClaimCheck.__dataclass_fields__
    return ClaimCheck(**{k: v for k, v in record.items() if k in names})


def checks_table(checks: Sequence[ClaimCheck]) -> pd.DataFrame:
    """One row per check (claim, check, regime, paper, this run, baseline, premises, verdict, tested, caveats, why),
    as a notebook shows them."""
    return pd.DataFrame([{"claim": c.claim, "check": c.name, "regime": c.regime, "paper": c.paper, "this run": c.measured,
                          "baseline / control": c.baseline, "premises": premises_text(c.premises),
                          "verdict": c.verdict, "tested": c.tested, "caveats": "; ".join(c.caveats), "why": c.why}
                         for c in checks])


def premises_table(checks: Sequence[ClaimCheck]) -> pd.DataFrame:
    """One row per premise of each check (``claim``, ``check``, ``regime``, ``premise``, ``value``, ``threshold``,
    ``holds``),
    shown before the verdicts so that a reader sees what each one rests on; a check without premises gets one
    row saying so. Introduced in notebook ``03_perturbation_theory``."""
    rows = []
    for check in checks:
        for p in check.premises or [{"name": "(none measured)", "value": None, "threshold": None, "holds": None}]:
            rows.append({"claim": check.claim, "check": check.name, "regime": check.regime, "premise": p["name"],
                         "value": p["value"], "threshold": p["threshold"], "holds": p["holds"]})
    return pd.DataFrame(rows, columns=["claim", "check", "regime", "premise", "value", "threshold", "holds"])


def verdict_counts(table: pd.DataFrame) -> dict[str, int]:
    """How many checks of a :func:`ledger` or :func:`checks_table` got each verdict, every kind of
    :data:`VERDICTS` listed (0 where none), then ``not measured`` when the ledger has such rows."""
    counts = {v: int((table["verdict"] == v).sum()) for v in VERDICTS}
    unknown = sorted(set(table["verdict"]) - set(VERDICTS) - {"not measured"})
    if unknown:
        raise ValueError(f"unknown verdict(s) {unknown}; valid: {', '.join(VERDICTS)}")
    missing = int((table["verdict"] == "not measured").sum())
    return {**counts, **({"not measured": missing} if missing else {})}


def ledger(run_dir: str | Path) -> pd.DataFrame:
    """Every claim check a run recorded, gathered in claim order (C0-C7, then the kit's own comparisons,
    :data:`KIT_CLAIM_IDS`: K1), one row per check; a claim with no recorded check gets one row saying so (its
    notebook has not run, or does not exist yet).

    Columns: claim, check, regime (the ladder's rung, :data:`REGIMES`; "" off the ladder), notebook, paper, this run, baseline / control, premises (in words), verdict, tested
    (mechanism or outcome), caveats, why, rules (the rules version it was judged by), artifacts (the cache keys
    the check was computed from; empty for older records). Introduced with
    ``python -m mdrl_lib report RUN_DIR``.
    """
    folder = Path(run_dir) / CLAIMS_DIR
    if not Path(run_dir).is_dir():
        raise FileNotFoundError(f"no run directory at {run_dir}")
    rows = []
    paths = [p for p in folder.glob("*-*.json") if p.name.split("-")[0] in CLAIM_IDS] if folder.is_dir() else []
    for path in sorted(paths):
        record = json.loads(path.read_text())
        check = load_check(path)
        rows.append({"claim": check.claim, "check": check.name, "regime": check.regime,
                     "notebook": record.get("notebook", ""),
                     "paper": check.paper, "this run": check.measured, "baseline / control": check.baseline,
                     "premises": premises_text(check.premises), "verdict": check.verdict, "tested": check.tested,
                     "caveats": "; ".join(check.caveats), "why": check.why,
                     "rules": record.get("rules_version", ""), "artifacts": check.artifacts})
    recorded = {r["claim"] for r in rows}
    for claim in CLAIM_IDS:
        if claim not in recorded:
            rows.append({"claim": claim, "check": "", "regime": "", "notebook": "", "paper": "", "this run": "",
                         "baseline / control": "", "premises": "", "verdict": "not measured", "tested": "",
                         "caveats": "", "why": "no check of this claim is recorded in this run directory",
                         "rules": "", "artifacts": []})
    table = pd.DataFrame(rows)
    table["order"] = table["claim"].map(CLAIM_IDS.index)
    return table.sort_values(["order", "check"], kind="stable").drop(columns="order").reset_index(drop=True)


def regime_table(run_dir: str | Path, claim: str) -> pd.DataFrame:
    """The recorded checks of ``claim`` side by side by rung: one row per check with a regime, in ladder order
    (:data:`REGIMES`), then those off the ladder; columns check, regime, notebook, verdict, tested, premises.
    Notebook ``05_refresh_vs_rollback`` sets its real refresh (C6, ``default LM``) beside notebook 03's theorem
    checks on every rung. Introduced in notebook 05."""
    if claim not in CLAIM_IDS:
        raise ValueError(f"unknown claim {claim!r}; valid claims: {', '.join(CLAIM_IDS)}")
    table = ledger(run_dir)
    table = table[(table["claim"] == claim) & (table["verdict"] != "not measured")]
    order = {r: i for i, r in enumerate(REGIMES)}
    table = table.assign(_rung=table["regime"].map(lambda r: order.get(r, len(REGIMES))))
    return (table.sort_values(["_rung", "notebook", "check"], kind="stable")
            [["check", "regime", "notebook", "verdict", "tested", "premises"]].reset_index(drop=True))

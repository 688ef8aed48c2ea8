"""The record of a claim check: what one notebook found about one of the paper's claims, on its own run.

Introduced in notebook ``02_shared_routes``. A :class:`ClaimCheck` holds the claim, the paper's figure, this
run's figure, the baseline or control it was held against, a verdict (``True``, ``False``, or ``None`` when
this run cannot test it), why, and the cache keys of the artifacts it was computed from.
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
from typing import Any, Sequence

import pandas as pd

from mdrl_lib.store import write_json_atomic

CLAIMS_DIR = "claims"
# C0 is the task-level observation the paper starts from (a later domain's RL lowers an earlier domain);
# C1-C7 are the claims that explain it.
CLAIM_IDS: tuple[str, ...] = ("C0", "C1", "C2", "C3", "C4", "C5", "C6", "C7")
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")


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
    the kit; empty for a record written before the field existed or against a bare run directory).
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

    def __post_init__(self) -> None:
        if self.claim not in CLAIM_IDS:
            raise ValueError(f"unknown claim {self.claim!r}; valid claims: {', '.join(CLAIM_IDS)}")
        if not (isinstance(self.name, str) and _NAME.match(self.name)):
            raise ValueError(f"check name {self.name!r} must be a lowercase slug of letters, digits and '-'")
        if self.supported not in (True, False, None):
            raise TypeError(f"supported must be True, False or None, got {self.supported!r}")
        object.__setattr__(self, "figures", {k: _plain(v) for k, v in dict(self.figures).items()})
        object.__setattr__(self, "artifacts", _keys(self.artifacts))

    @property
    def verdict(self) -> str:
        """``supported``, ``not supported`` or ``not testable``, as a table shows it."""
        return {True: "supported", False: "not supported", None: "not testable"}[self.supported]

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
    record = {**check.as_dict(), "verdict": check.verdict, "notebook": notebook,
              "recorded": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if config is not None:
        record["run"] = {"scale": config.scale, "seed": config.seed, "model": config.model.name}
    path = claim_path(run_dir, check)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, record)
    return path


def load_check(path: str | Path) -> ClaimCheck:
    """The :class:`ClaimCheck` recorded at ``path`` (the extra fields of the record are dropped; a record
    written before ``artifacts`` existed loads with none)."""
    record = json.loads(Path(path).read_text())
    names = ClaimCheck.__dataclass_fields__
    return ClaimCheck(**{k: v for k, v in record.items() if k in names})


def checks_table(checks: Sequence[ClaimCheck]) -> pd.DataFrame:
    """One row per check (claim, check, paper, this run, baseline, verdict, why), as a notebook shows them."""
    return pd.DataFrame([{"claim": c.claim, "check": c.name, "paper": c.paper, "this run": c.measured,
                          "baseline / control": c.baseline, "verdict": c.verdict, "why": c.why} for c in checks])


def ledger(run_dir: str | Path) -> pd.DataFrame:
    """Every claim check a run recorded, gathered in claim order (C0-C7), one row per check; a claim with
    no recorded check gets one row saying so (its notebook has not run, or does not exist yet).

    Columns: claim, check, notebook, paper, this run, baseline / control, verdict, why, artifacts (the cache
    keys the check was computed from; empty for older records). Introduced with
    ``python -m mdrl_lib report RUN_DIR``.
    """
    folder = Path(run_dir) / CLAIMS_DIR
    if not Path(run_dir).is_dir():
        raise FileNotFoundError(f"no run directory at {run_dir}")
    rows = []
    for path in sorted(folder.glob("C*-*.json")) if folder.is_dir() else []:
        record = json.loads(path.read_text())
        check = load_check(path)
        rows.append({"claim": check.claim, "check": check.name, "notebook": record.get("notebook", ""),
                     "paper": check.paper, "this run": check.measured, "baseline / control": check.baseline,
                     "verdict": check.verdict, "why": check.why, "artifacts": check.artifacts})
    recorded = {r["claim"] for r in rows}
    for claim in CLAIM_IDS:
        if claim not in recorded:
            rows.append({"claim": claim, "check": "", "notebook": "", "paper": "", "this run": "",
                         "baseline / control": "", "verdict": "not measured",
                         "why": "no check of this claim is recorded in this run directory", "artifacts": []})
    table = pd.DataFrame(rows)
    table["order"] = table["claim"].map(CLAIM_IDS.index)
    return table.sort_values(["order", "check"], kind="stable").drop(columns="order").reset_index(drop=True)

"""Claim checks: each notebook ends by holding some of the paper's claims against its own run.

One module per notebook holds that notebook's rules (:mod:`~mdrl_lib.claims.nb00`: the base's preconditions;
``nb01``: C1, C2; ``nb02``: C3, C4; ``nb03``: C5, C6's theorem; ``nb04``: C0; ``nb05``: C6's refresh, C7; ``nb06``: K1, the kit's own comparison of recovery methods, not a claim
of the paper) and
:mod:`~mdrl_lib.claims.record` the record every check is written to and the ledger that gathers them. The
verdict functions take measured numbers, not models, and state their rule in their docstrings: the rule is
fixed before the run, its thresholds are read from the versioned rules file (:mod:`~mdrl_lib.claims.rules`),
and the notebook prints the numbers it was applied to. A check records the premises it rests on; one that
fails makes the verdict "not testable here".
"""
from mdrl_lib.claims.nb00 import (MATH_RIGHT_NUMBER_FLOOR, SCORE_CEILING, base_precondition_table, base_preconditions,
                                  precondition_warning)
from mdrl_lib.claims.nb01 import (C1_ALPHA, C1_COLUMNS, C1_PAPER, C1_PAPER_RANGE, C1_STATEMENT, C2_PAPER, C2_PAPER_MAX,
                                  C2_RATIO, C2_STATEMENT, check_c1, check_c2)
from mdrl_lib.claims.nb02 import (C3_MIN_FLOOR, C3_PAPER, C3_RATIO, C3_STATEMENT, C4_ALPHA, C4_MIN_SHARE, C4_PAPER,
                                  C4_STATEMENT, OVERLAP_COLUMNS, AblationContrast, ablation_contrasts, check_c3,
                                  check_c4)
from mdrl_lib.claims.nb03 import (C5_MIN_SHARE, C5_PAPER, C5_RTOL, C5_STATEMENT, C6_PAPER, C6_STATEMENT, check_c5,
                                  check_c6_theory)
from mdrl_lib.claims.nb04 import C0_ALPHA, C0_PAPER, C0_STATEMENT, DROP_COLUMNS, check_c0
from mdrl_lib.claims.nb05 import (C6_COLLATERAL, C6_REFRESH_PAPER, C6_REFRESH_STATEMENT, C7_PAPER, C7_STATEMENT,
                                  check_c6_refresh, check_c7)
from mdrl_lib.claims.nb06 import K1_PAPER, K1_STATEMENT, check_k1
from mdrl_lib.claims.record import (CLAIM_IDS, CLAIMS_DIR, KIT_CLAIM_IDS, REGIMES, TESTED, VERDICTS, ClaimCheck,
                                    checks_table, claim_path, ledger, load_check, premise, premises_table,
                                    premises_text, record_check, regime_table, verdict_counts)
from mdrl_lib.claims.rules import RULES_FILE, RULES_VERSION, rule

__all__ = [
    "CLAIM_IDS", "CLAIMS_DIR", "ClaimCheck", "checks_table", "claim_path", "ledger", "load_check", "record_check",
    "REGIMES", "TESTED", "VERDICTS", "premise", "premises_table", "premises_text", "regime_table", "verdict_counts",
    "RULES_FILE", "RULES_VERSION", "rule",
    "MATH_RIGHT_NUMBER_FLOOR", "SCORE_CEILING", "base_precondition_table", "base_preconditions", "precondition_warning",
    "C1_ALPHA", "C1_COLUMNS", "C1_PAPER", "C1_PAPER_RANGE", "C1_STATEMENT", "C2_PAPER", "C2_PAPER_MAX", "C2_RATIO",
    "C2_STATEMENT", "check_c1", "check_c2",
    "C3_MIN_FLOOR", "C3_PAPER", "C3_RATIO", "C3_STATEMENT", "C4_ALPHA", "C4_MIN_SHARE", "C4_PAPER", "C4_STATEMENT",
    "OVERLAP_COLUMNS", "AblationContrast", "ablation_contrasts", "check_c3", "check_c4",
    "C5_MIN_SHARE", "C5_PAPER", "C5_RTOL", "C5_STATEMENT", "C6_PAPER", "C6_STATEMENT", "check_c5", "check_c6_theory",
    "C0_ALPHA", "C0_PAPER", "C0_STATEMENT", "DROP_COLUMNS", "check_c0",
    "C6_COLLATERAL", "C6_REFRESH_PAPER", "C6_REFRESH_STATEMENT", "C7_PAPER", "C7_STATEMENT", "check_c6_refresh",
    "check_c7", "K1_PAPER", "K1_STATEMENT", "check_k1", "KIT_CLAIM_IDS",
]

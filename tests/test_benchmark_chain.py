"""The criterion arithmetic of benchmarks/chain.py: seed spread and the summary verdict."""
from __future__ import annotations

import math

import pytest
import torch

from tests.script_runner import ROOT, load_script


@pytest.fixture(scope="module")
def chain():
    threads = torch.get_num_threads()
    module = load_script(ROOT / "benchmarks" / "chain.py")  # sets torch to one thread
    yield module
    torch.set_num_threads(threads)


def result(seed, rows, end_move, drop_se=3.0, recovery=0.8):
    """A per-seed record as run_seed returns it, for the domains ``code`` and ``qa``."""
    matrix = {d: dict(zip(("base", "code", "math"), values)) for d, values in rows.items()}
    refreshed = {d: matrix[d]["math"] + end_move[d] for d in rows}
    return {"seed": seed, "drop": 0.1, "drop_se": drop_se, "recovery": recovery, "expert_gains": {},
            "others": end_move, "matrix": matrix, "refresh": refreshed, "chain_seconds": 1.0, "cached_seconds": 0.0}


def test_seed_spread_pools_the_variance_over_the_matrix_rows(chain):
    # code: rows base/code/math have seed values (0.1, 0.3), (0.2, 0.2), (0.5, 0.5): variances 0.02, 0, 0
    results = [result(0, {"code": (0.1, 0.2, 0.5), "qa": (0.4, 0.4, 0.4)}, {"code": 0.0, "qa": 0.0}),
               result(1, {"code": (0.3, 0.2, 0.5), "qa": (0.4, 0.4, 0.6)}, {"code": 0.0, "qa": 0.0})]
    end, pooled = chain.seed_spread(results, ["code", "qa"])
    assert end["code"] == pytest.approx(0.0) and end["qa"] == pytest.approx(math.sqrt(0.02))
    assert pooled["code"] == pytest.approx(math.sqrt(0.02 / 3))
    assert pooled["qa"] == pytest.approx(math.sqrt(0.02 / 3))


def test_summary_verdict_needs_the_drop_the_recovery_and_small_moves(chain, capsys):
    rows = {"code": (0.1, 0.2, 0.5), "qa": (0.4, 0.4, 0.4)}
    rows_b = {"code": (0.3, 0.2, 0.5), "qa": (0.4, 0.4, 0.6)}
    # four seeds alternating rows and rows_b: one row of each domain has a variance of 0.04 / 3
    spread = math.sqrt(0.04 / 3 / 3)  # about 0.067 for both domains
    chain.summarize([result(0, rows, {"code": 0.05, "qa": -0.05}),
                     result(1, rows_b, {"code": spread + 0.01, "qa": 0.0}),
                     result(2, rows, {"code": 0.0, "qa": 0.0}, drop_se=1.9),
                     result(3, rows_b, {"code": 0.0, "qa": 0.0}, recovery=0.4)])
    verdicts = [line.rsplit("->", 1)[1].strip() for line in capsys.readouterr().out.splitlines()
                if line.startswith("seed ") and "->" in line]
    assert verdicts == ["meets the criterion", "misses the criterion", "misses the criterion",
                        "misses the criterion"]

"""Notebook ``06_recovery_methods``'s exercises: the Pareto front of recovery methods with their costs, and a TIES
merge.

- ``06-pareto-front``: the methods no other method beats on the damaged domain, the others' mean and cost at once,
  held against :func:`mdrl_lib.comparison.pareto_front`.
- ``06-ties-merge``: TIES's trim, sign election and disjoint mean for one tensor, held against
  :func:`mdrl_lib.merging.merge_tensors` (which calls peft's merge utilities).
"""
from __future__ import annotations

from mdrl_lib.exercises.core import Case, Exercise

NOTEBOOK = "06_recovery_methods"
NAN = float("nan")

# (method, damaged_change, others_mean, cost)
_TABLE = (
    ("refresh 150", 0.16, 0.017, 120000.0),
    ("refresh 50", 0.09, 0.010, 40000.0),
    ("rollback k=0.01", 0.05, 0.002, 2000.0),
    ("rollback k=0.1", 0.04, -0.010, 2000.0),
    ("task arithmetic 0.3", 0.07, 0.030, 0.0),
    ("ties 0.3", 0.02, 0.020, 0.0),
    ("expert math", 0.25, -0.200, NAN),
    ("alternating 3 cycles", 0.10, 0.015, 120000.0),
)


def _rows(table) -> list[dict]:
    return [{"method": m, "damaged_change": d, "others_mean": o, "cost": c} for m, d, o, c in table]


def _random_rows(seed: int, count: int) -> list[dict]:
    import numpy as np

    rng = np.random.default_rng(seed)
    return [{"method": f"method {i}", "damaged_change": float(rng.normal(0.05, 0.05)),
             "others_mean": float(rng.normal(0.0, 0.02)), "cost": float(rng.choice([0.0, 500.0, 2000.0, 40000.0]))}
            for i in range(count)]


def _front_cases() -> list[Case]:
    import pandas as pd

    from mdrl_lib import comparison

    tied = _rows(_TABLE[:3]) + [{"method": "rollback copy", "damaged_change": 0.05, "others_mean": 0.002,
                                 "cost": 2000.0}]
    settings = (
        ("notebook 06's kind of table: refreshes, rollbacks, merges, an expert without a cost", _rows(_TABLE)),
        ("two methods exactly equal: neither dominates, both stay", tied),
        ("twelve random methods with four costs", _random_rows(0, 12)),
        ("twelve more", _random_rows(1, 12)),
        ("a single method", _rows(_TABLE[:1])),
    )
    out = []
    for label, rows in settings:
        front = comparison.pareto_front(pd.DataFrame(rows))
        out.append(Case(label, (rows,), [str(m) for m in front["method"]]))
    return out


def _ties_cases() -> list[Case]:
    import torch

    from mdrl_lib import merging

    out = []
    for seed, models, shape, density, label in ((0, 3, (4, 5), 0.2, "three experts, top 20% of each task vector"),
                                                (0, 3, (4, 5), 0.5, "the same experts, top 50%"),
                                                (1, 4, (6, 5), 0.1, "four models, top 10%"),
                                                (2, 2, (10,), 1.0, "two models, nothing trimmed")):
        generator = torch.Generator().manual_seed(seed)
        base = torch.randn(shape, generator=generator)
        tensors = [base + 0.1 * torch.randn(shape, generator=generator) for _ in range(models)]
        expected = merging.merge_tensors("ties", base, tensors, density=density)
        out.append(Case(f"{label}: {models} tensors of shape {shape}", (base, tensors, density), expected,
                        rtol=1e-5, atol=1e-7))
    return out


EXERCISES = (
    Exercise(
        key="06-pareto-front", notebook=NOTEBOOK, title="The Pareto front, costs included",
        objective="Find the recovery methods no other method beats: a method dominates another when it is at least "
                  "as good on the damaged domain's change and on the others' mean change (higher is better) and no "
                  "dearer, and strictly better on one of the three. K1 asks whether the single refresh is on this "
                  "front.",
        difficulty=2, importance="core", minutes=15,
        hint="For each row, look for another row that dominates it: damaged_change and others_mean both >= and "
             "cost <=, with at least one strict. A row whose cost is NaN (an expert, a reference) is never on the "
             "front and dominates nothing. Equal rows do not dominate each other. Return the front's method names "
             "in the rows' order.",
        function="my_pareto_front", compared_with="mdrl_lib.comparison.pareto_front",
        cases=_front_cases),
    Exercise(
        key="06-ties-merge", notebook=NOTEBOOK, title="A TIES merge of one tensor",
        objective="Merge several models' versions of one tensor by TIES: trim each task vector (model - base) to "
                  "its largest entries, elect a sign per entry, and average only the entries that agree with it. "
                  "It is one of the merges notebook 06 sets beside the refresh.",
        difficulty=3, importance="extra", minutes=20,
        hint="tau_i = tensor_i - base. Keep the k = int(density * entries) largest |tau_i| of each (zero the rest). "
             "The elected sign is the sign of the sum of the trimmed vectors (+ where the sum is 0). Per entry, sum "
             "the trimmed entries whose sign equals the elected one and divide by how many there are (at least "
             "1). Return base + that mean.",
        function="my_ties_merge", compared_with="mdrl_lib.merging.merge_tensors",
        cases=_ties_cases),
)

"""Each notebook asks the kit for what its recipe plans, no more: the planner and the notebook cannot drift.

While nbval runs a notebook, the kit appends every spec the notebook asks for to a log
(``MDRL_GET_LOG``, set per notebook by the test configuration). These tests run after the notebooks
and hold each log against the recipe's plan at the notebook's defaults.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mdrl_lib.recipes import RECIPE_MODULES

NOTEBOOKS = list(RECIPE_MODULES)


def closure(kit, specs) -> set[str]:
    """The keys of ``specs`` and of everything they are built from."""
    from mdrl_lib.specs import as_spec

    keys, todo = set(), list(specs)
    while todo:
        spec = as_spec(todo.pop())
        key = kit.key(spec)
        if key not in keys:
            keys.add(key)
            todo += list(spec.inputs())
    return keys


@pytest.mark.after_notebooks
@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_the_notebook_asked_for_what_its_recipe_plans(notebook):
    from mdrl_lib import plan
    from mdrl_lib.config import RunConfig
    from mdrl_lib.kit import open_kit
    from mdrl_lib.recipes import recipe

    log = Path(os.environ.get("MDRL_REQUESTS_DIR", "/nonexistent")) / f"{notebook}.jsonl"
    if not log.is_file():
        pytest.skip(f"{notebook} did not run in this session (run the notebooks with nbval to check it)")
    asked = {json.loads(line)["key"]: json.loads(line)["label"] for line in log.read_text().splitlines()}
    run_dir = os.environ["MDRL_RUN_DIR"]
    planned = plan.notebook_plan(Path(notebook + ".ipynb"), {"run_dir": run_dir})
    by_run: dict = {}
    for item in planned:
        by_run.setdefault(item.run_params, []).append(item.spec)
    kits = {run: open_kit(RunConfig.from_params(**dict(run))) for run in by_run}
    planned_keys = {kits[run].key(spec) for run, specs in by_run.items() for spec in specs}
    reachable = set().union(*(closure(kits[run], specs) for run, specs in by_run.items()))
    params = plan.notebook_params(notebook, {"run_dir": run_dir})
    optional = getattr(recipe(notebook), "if_stored", lambda kit, params: [])
    main_kit = open_kit(params.config)
    reachable |= closure(main_kit, optional(main_kit, params))
    unplanned = {k: label for k, label in asked.items() if k not in reachable}
    assert not unplanned, f"{notebook} asked for artifacts its recipe does not plan: {sorted(unplanned.values())}"
    unused = planned_keys - reachable_from_asked(kits, by_run, asked)
    assert not unused, f"{notebook}'s recipe plans artifacts the notebook never asked for: {sorted(unused)}"


def reachable_from_asked(kits, by_run, asked) -> set[str]:
    """The planned keys the notebook's requests reach (a request and everything it is built from)."""
    out: set[str] = set()
    for run, specs in by_run.items():
        for spec in specs:
            if kits[run].key(spec) in asked:
                out |= closure(kits[run], [spec])
    return out

"""One recipe per notebook: its parameters, every spec it asks the kit for, and its claim checks' inputs.

Introduced in notebook ``00_toy_world``. A recipe module ``nbNN`` holds a frozen ``Params`` dataclass
(:class:`~mdrl_lib.recipes.params.NotebookParams`: the one declaration of the notebook's parameters,
their defaults, types, bounds and help) and ``plan(kit, params)``, the list of specs the notebook will
ask for (an entry ``(run overrides, spec)`` belongs to a run with other settings). A notebook reads
``params = recipe.Params.from_namespace(globals())`` in its first cell and takes its specs from the
same module, so the pipeline (:mod:`mdrl_lib.plan`) builds exactly what the notebook uses.
"""
from __future__ import annotations

import importlib
from types import ModuleType

# notebook file name (without suffix) -> its recipe module
RECIPE_MODULES: dict[str, str] = {
    "00_toy_world": "mdrl_lib.recipes.nb00",
    "01_sparse_edits": "mdrl_lib.recipes.nb01",
    "02_shared_routes": "mdrl_lib.recipes.nb02",
    "03_perturbation_theory": "mdrl_lib.recipes.nb03",
    "04_sequential_rl": "mdrl_lib.recipes.nb04",
    "05_refresh_vs_rollback": "mdrl_lib.recipes.nb05",
    "06_recovery_methods": "mdrl_lib.recipes.nb06",
}


def recipe(notebook: str) -> ModuleType:
    """The recipe module of ``notebook`` (its file name without suffix, e.g. ``01_sparse_edits``)."""
    from mdrl_lib.config import ConfigError

    if notebook not in RECIPE_MODULES:
        raise ConfigError(f"no recipe for notebook {notebook!r}; notebooks with a recipe: {', '.join(RECIPE_MODULES)}")
    return importlib.import_module(RECIPE_MODULES[notebook])


def has_recipe(notebook: str) -> bool:
    return notebook in RECIPE_MODULES

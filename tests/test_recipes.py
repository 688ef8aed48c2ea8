"""The recipes: one declaration of each notebook's parameters, pinned to the notebook's papermill cell."""
from __future__ import annotations

import ast
import dataclasses
import json
import re
from pathlib import Path

import pytest

from mdrl_lib.config import ConfigError, RunConfig
from mdrl_lib.recipes import RECIPE_MODULES, recipe
from mdrl_lib.recipes.params import injected_names, literal

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def parameters_cell(path: Path) -> str:
    cells = json.loads(path.read_text())["cells"]
    return "".join(next(c for c in cells if "parameters" in c.get("metadata", {}).get("tags", []))["source"])


def test_every_notebook_has_a_recipe_and_every_recipe_a_notebook():
    assert [p.stem for p in NOTEBOOKS] == list(RECIPE_MODULES)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_the_papermill_cell_is_the_recipes_declaration(path):
    """The cell is written from the recipe: the same names, defaults, types and help, in order."""
    params_type = recipe(path.stem).Params
    assert parameters_cell(path) == params_type.papermill_cell()
    tree = ast.parse(parameters_cell(path))
    assert [n.target.id for n in tree.body] == params_type.names()
    assert {n.target.id: ast.literal_eval(n.value) for n in tree.body} == params_type.defaults()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_papermill_reads_each_default_and_help(path):
    import papermill

    read = papermill.inspect_notebook(str(path))
    params_type = recipe(path.stem).Params
    assert list(read) == params_type.names()
    for f in dataclasses.fields(params_type):
        assert ast.literal_eval(read[f.name]["default"]) == f.default
        assert read[f.name]["help"] == f.metadata["help"]


@pytest.mark.parametrize("notebook", list(RECIPE_MODULES))
def test_the_defaults_are_valid_and_build_the_run_config(notebook, tmp_path):
    params = recipe(notebook).Params(run_dir=str(tmp_path))
    assert params.config.scale == "toy" and params.config.run_dir == str(tmp_path)
    assert set(params.options()) | set(params.run_values()) == set(params.names())


def test_a_name_two_notebooks_share_has_one_default_and_one_type():
    seen: dict[str, tuple] = {}
    for notebook in RECIPE_MODULES:
        for f in dataclasses.fields(recipe(notebook).Params):
            declared = (f.default, f.metadata["type"], bool(f.metadata.get("run")))
            assert seen.setdefault(f.name, declared) == declared, f"{f.name}: {notebook} differs from another notebook"


def test_params_prints_each_notebooks_own_defaults(capsys):
    from mdrl_lib.cli import main

    assert main(["params", "02"]) == 0
    two = capsys.readouterr().out
    assert main(["params", "03"]) == 0
    three = capsys.readouterr().out
    assert "route_fraction" in two and "conflict_route_fraction" not in two
    assert re.search(r"\n  conflict_route_fraction +float +notebook default 0.2 ", three)
    assert re.search(r"\n  gradient_prompts +int +notebook default 96 ", two)
    assert re.search(r"\n  objective_prompts +int +notebook default 64 ", three)


def test_an_undeclared_name_is_an_error_that_lists_the_valid_ones():
    params_type = recipe("00_toy_world").Params
    with pytest.raises(ConfigError, match=r"unknown parameter 'rl_lr'.*valid parameters: scale, seed"):
        params_type.from_values({"rl_lr": 1e-3})
    with pytest.raises(ConfigError, match="did you mean 'examples_per_domain'"):
        params_type.from_values(examples_per_domainn=3)


def test_from_namespace_reads_declared_names_and_rejects_injected_unknown_ones(tmp_path):
    params_type = recipe("00_toy_world").Params
    namespace = {"scale": "toy", "seed": 3, "run_dir": str(tmp_path), "examples_per_domain": 2,
                 "In": ["", "# Parameters\nseed = 3\n"], "unrelated": 1.5}
    params = params_type.from_namespace(namespace)
    assert params.seed == 3 and params.examples_per_domain == 2 and params.num_generations == 8
    namespace["In"].append("# Parameters\nseed = 3\norder = \"math,qa\"\n")
    with pytest.raises(ConfigError, match="00_toy_world: unknown parameter 'order'.*; valid parameters: scale, seed"):
        params_type.from_namespace(namespace)


def test_injected_names_reads_the_last_parameters_cell_only():
    assert injected_names(None) == set() and injected_names(["x = 1"]) == set()
    history = ["", "# Parameters\na = 1\n", "print(a)", "# Parameters\nb = 'x'\nc: int = 2\n"]
    assert injected_names(history) == {"b", "c"}


def test_a_bad_value_names_the_field_and_what_is_allowed():
    with pytest.raises(ConfigError, match=r"^num_generations: expected an integer >= 2"):
        recipe("00_toy_world").Params(num_generations=1)
    with pytest.raises(ConfigError, match="rate_grid: expected comma-separated numbers"):
        recipe("01_sparse_edits").Params(rate_grid="5e-4,zero")
    with pytest.raises(ConfigError, match="^seed: expected an integer >= 0"):
        recipe("02_shared_routes").Params(seed=-1)


def test_relations_between_fields_are_checked():
    with pytest.raises(ConfigError, match="checkpoint_every: 80 exceeds local_steps"):
        recipe("03_perturbation_theory").Params(checkpoint_every=80, local_steps=60)
    with pytest.raises(ConfigError, match="damaged_domain: 'cw' is the chain's last stage"):
        recipe("04_sequential_rl").Params(damaged_domain="cw")
    with pytest.raises(ConfigError, match="rl_seeds: give at least one"):
        recipe("04_sequential_rl").Params(rl_seeds="")
    with pytest.raises(ConfigError, match="c7_fraction: 0.02 is not one of rollback_fractions"):
        recipe("05_refresh_vs_rollback").Params(c7_fraction=0.02)
    with pytest.raises(ConfigError, match="A must be trained before B"):
        recipe("05_refresh_vs_rollback").Params(second_rollback_pair="cw,math")
    with pytest.raises(ConfigError, match="refresh_budgets: expected whole numbers"):
        recipe("05_refresh_vs_rollback").Params(refresh_budgets="2.5")
    with pytest.raises(ConfigError, match="scale: notebook 01 compares weight files"):
        recipe("01_sparse_edits").Params(scale="full", model="Qwen/Qwen3-4B-Thinking-2507")


def test_derived_values():
    nb01 = recipe("01_sparse_edits").Params(rate_grid="1e-5, 2e-4,1e-5", second_seed_domains="qa,math")
    assert nb01.rates == (2e-4, 1e-5) and nb01.second_seeds == ("qa", "math")
    assert recipe("01_sparse_edits").Params(second_seed_domains="all").second_seeds == ("code", "math", "qa", "cw")
    assert recipe("01_sparse_edits").Params(second_seed_domains="").second_seeds == ()
    nb04 = recipe("04_sequential_rl").Params(rl_seeds="2, 0", world_seeds="")
    assert nb04.seeds == (2, 0) and nb04.other_worlds == ()
    nb05 = recipe("05_refresh_vs_rollback").Params(refresh_budgets="50,10,10", rollback_pair="math,qa",
                                                   second_rollback_pair="math,qa")
    assert nb05.budgets == (10, 50) and nb05.pairs == (("math", "qa"),)


def test_literal_writes_what_a_parameters_cell_holds():
    assert literal("a") == '"a"' and literal(None) == "None" and literal(0.1) == "0.1" and literal(True) == "True"
    assert ast.literal_eval(literal('say "hi"')) == 'say "hi"'


@pytest.mark.parametrize("notebook", list(RECIPE_MODULES))
def test_each_default_has_the_type_its_cell_declares(notebook):
    for f in dataclasses.fields(recipe(notebook).Params):
        assert f.default is None or isinstance(f.default, f.metadata["type"]), f.name


def test_a_shared_parameter_is_declared_once():
    """A name several notebooks declare (beyond the base class's run parameters) comes from one shared
    declaration in recipes/params.py, so its default is written once."""
    import inspect
    import re

    from mdrl_lib.recipes.params import NotebookParams

    owners: dict[str, list[str]] = {}
    for notebook in RECIPE_MODULES:
        for name in recipe(notebook).Params.names():
            if name not in NotebookParams.names():
                owners.setdefault(name, []).append(notebook)
    shared = {name: notebooks for name, notebooks in owners.items() if len(notebooks) > 1}
    assert {"order", "objective_prompts", "conflict_route_fraction"} <= set(shared)
    for name, notebooks in shared.items():
        for notebook in notebooks:
            source = inspect.getsource(recipe(notebook))
            assert re.search(rf"^    {name}: \w+ = common\.{name if name != 'order' else 'chain_order'}\(\)$", source,
                             re.M), f"{notebook} declares {name} itself"


def test_a_recipe_does_not_declare_a_run_parameter_of_the_base_class_again():
    """``scale``, ``seed``, ``model``, ``warmup_steps`` and ``run_dir`` are declared once, on NotebookParams."""
    import inspect
    import re

    from mdrl_lib.recipes.params import NotebookParams

    for notebook in RECIPE_MODULES:
        source = inspect.getsource(recipe(notebook).Params)
        for name in NotebookParams.names():
            assert not re.search(rf"^    {name}: ", source, re.M), f"{notebook} declares {name} again"


def test_used_and_planned_keys_walk_every_input_once_and_skip_pending(tmp_path):
    from mdrl_lib.kit import Kit
    from mdrl_lib.plan import Pending
    from mdrl_lib.recipes.params import used_and_planned_keys
    from mdrl_lib.specs import Base, Scores, Stage

    kit = Kit(RunConfig.from_params(run_dir=str(tmp_path)))
    expert = Stage(Base(), "math")
    used, planned = used_and_planned_keys(kit, [Scores(expert), expert, Pending("later", ())])
    assert used == set() and planned == {kit.key(Scores(expert)), kit.key(expert), kit.key(Base())}

"""Bad parameters at every entry point: the run configuration, the CLI and papermill. Each set fails
before any work with one message that names the field, the value and what is allowed."""
from __future__ import annotations

from pathlib import Path

import pytest

from mdrl_lib.cli import main
from mdrl_lib.config import ConfigError, RunConfig, parameter_names
from mdrl_lib.recipes import nb00, nb04

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_00 = ROOT / "notebooks" / "00_toy_world.ipynb"

# (parameters, the field the message must name, a fragment saying what is allowed)
BAD = [
    ({"scale": "huge"}, "scale", "toy, full"),
    ({"seed": -1}, "seed", ">= 0"),
    ({"seed": 10**20}, "seed", "<= 2147483647"),
    ({"seed": 1.5}, "seed", "integer"),
    ({"order": "code,physics"}, "order", "code, math, qa, cw"),
    ({"order": "math,math"}, "order", "more than once"),
    ({"model": "gpt-5"}, "model", "toy"),
    ({"warmup_steps": -5}, "warmup_steps", ">= 0"),
    ({"warmup_lr": float("inf")}, "warmup_lr", "finite"),
    ({"warmup_lr": 0}, "warmup_lr", "> 0"),
    ({"warmup_batch_size": 0}, "warmup_batch_size", ">= 1"),
    ({"rl_steps": 0}, "rl_steps", ">= 1"),
    ({"rl_refresh_steps": 0}, "rl_refresh_steps", ">= 1"),
    ({"rl_lr": -1e-4}, "rl_lr", "> 0"),
    ({"rl_lr_schedule": "step"}, "rl_lr_schedule", "linear, constant, cosine"),
    ({"rl_temperature": 0}, "rl_temperature", "> 0"),
    ({"rl_num_generations": 0}, "rl_num_generations", ">= 2"),
    ({"rl_prompts_per_step": 0}, "rl_prompts_per_step", ">= 1"),
    ({"rl_max_completion_length": 0}, "rl_max_completion_length", ">= 1"),
    ({"rl_kl_beta": -1.0}, "rl_kl_beta", ">= 0"),
    ({"rl_precision": "fp8"}, "rl_precision", "fp32, bf16"),
    ({"data_train_size": 100000}, "data_train_size", "toy"),
    ({"data_eval_size": -2}, "data_eval_size", ">= 0"),
    ({"model_num_heads": 3}, "model_num_heads", "must divide"),
    ({"compute_device": "tpu"}, "compute_device", "auto, cpu, cuda"),
    ({"examples_per_domain": -2}, "examples_per_domain", ">= 1"),
    ({"examples_per_domain": "three"}, "examples_per_domain", "integer"),
    ({"num_generations": 1}, "num_generations", ">= 2"),
    ({"rl_seeds": "0,x"}, "rl_seeds", "comma-separated integers"),
    ({"damaged_domain": "bio"}, "damaged_domain", "code, math, qa, cw"),
    ({"data_digit_free": "yes"}, "data_digit_free", "true or false"),
    ({"rl_stepz": 5}, "rl_stepz", "did you mean 'rl_steps'"),
]
NOTEBOOK_04_ONLY = {"rl_seeds", "damaged_domain"}


def check(params):
    """Check ``params`` as the kit does: run parameters by the run configuration, the rest by the recipe of a
    notebook that declares them (notebook 04's options, else notebook 00's)."""
    if set(params) <= set(parameter_names()) or "rl_stepz" in params:
        return RunConfig.from_params(**params)
    recipe = nb04 if set(params) & NOTEBOOK_04_ONLY else nb00
    return recipe.Params.from_values(params)


@pytest.mark.parametrize("params, field, allowed", BAD, ids=[next(iter(p)) for p, _, _ in BAD])
def test_the_declarations_reject_each_bad_set(params, field, allowed):
    with pytest.raises(ConfigError) as error:
        check(params)
    message = str(error.value)
    assert message.startswith(field) or f"'{field}'" in message
    assert allowed in message and "\n" not in message


@pytest.mark.parametrize("params, field, allowed", BAD, ids=[next(iter(p)) for p, _, _ in BAD])
def test_the_cli_rejects_each_bad_set_with_one_line(params, field, allowed, tmp_path, capsys):
    flags = [part for name, value in params.items() for part in ("-p", name, str(value))]
    notebook = "04" if set(params) & NOTEBOOK_04_ONLY else "00"
    if "rl_stepz" in params:  # the CLI suggests among the names the selected notebooks declare
        field, allowed = "rl_stepz", "the selected notebooks declare: "
    assert main(["run", "--only", notebook, "--run-dir", str(tmp_path / "run"), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and field in err and allowed in err
    assert not (tmp_path / "run" / "notebooks").exists()  # nothing ran, nothing was written


PAPERMILL_BAD = [({"seed": -1}, "seed"), ({"warmup_steps": -5}, "warmup_steps"), ({"model": "gpt-5"}, "model"),
                 ({"examples_per_domain": -2}, "examples_per_domain"), ({"num_generations": 1}, "num_generations"),
                 ({"scale": "huge"}, "scale"),
                 # names notebook 00 does not declare: papermill itself only warns and would go on to train
                 ({"rl_lr": 1e-3}, "00_toy_world: unknown parameter 'rl_lr'"),
                 ({"order": "math,qa"}, "00_toy_world: unknown parameter 'order'")]


@pytest.mark.parametrize("params, field", PAPERMILL_BAD, ids=[next(iter(p)) for p, _ in PAPERMILL_BAD])
def test_papermill_stops_in_the_first_cell_after_the_parameters_naming_the_field(params, field, tmp_path):
    """Plain papermill prints the failing cell's traceback; its last line is the kit's message, raised by the
    first cell after the parameters (which imports nothing heavy)."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    output = tmp_path / "out.ipynb"
    with pytest.raises(PapermillExecutionError) as error:
        papermill.execute_notebook(str(NOTEBOOK_00), str(output), parameters=params, kernel_name="python3",
                                   progress_bar=False, cwd=str(tmp_path))
    assert error.value.ename == "ConfigError" and error.value.evalue.startswith(field)
    cells = [c for c in papermill.iorw.load_notebook_node(str(output)).cells  # less papermill's error banner
             if "papermill-error-cell-tag" not in c.metadata.get("tags", [])]
    tags = [c.metadata.get("tags", []) for c in cells]
    first_after = next(i for i, t in enumerate(tags) if "injected-parameters" in t) + 1
    assert error.value.cell_index == first_after
    assert "import torch" not in cells[first_after].source and "mdrl_lib.kit" not in cells[first_after].source

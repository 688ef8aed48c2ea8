import pytest

from mdrl_lib.config import ConfigError, RunConfig, parameter_names, parse_order


def test_toy_defaults_are_valid_and_round_trip():
    config = RunConfig.from_params()
    assert config.scale == "toy" and config.order == ("code", "math", "qa", "cw")
    assert RunConfig.from_params(**config.to_params()) == config


def test_full_preset_changes_model_and_sizes():
    config = RunConfig.from_params(scale="full")
    assert config.model.name == "Qwen/Qwen3-4B-Thinking-2507"
    assert config.data.train_size == 5120 and config.rl.precision == "bf16"


def test_override_reaches_its_group():
    config = RunConfig.from_params(rl_lr=1e-4, warmup_steps=10, seed=3)
    assert (config.rl.lr, config.warmup.steps, config.seed) == (1e-4, 10, 3)


@pytest.mark.parametrize("params, fragments", [
    ({"scale": "huge"}, ["scale", "'huge'", "toy, full"]),
    ({"order": "code,physics"}, ["order", "'physics'", "code, math, qa, cw"]),
    ({"order": "math,math"}, ["order", "'math'", "more than once"]),
    ({"order": ""}, ["order", "empty", "code, math, qa, cw"]),
    ({"order": []}, ["order", "empty"]),
    ({"order": 3}, ["order", "3", "int", "code, math, qa, cw"]),
    ({"rl_steps": -3}, ["rl_steps", "-3", ">= 1"]),
    ({"rl_steps": 0}, ["rl_steps", "0", ">= 1"]),
    ({"warmup_lr": float("inf")}, ["warmup_lr", "inf", "finite"]),
    ({"rl_temperature": 0}, ["rl_temperature", "0", "> 0"]),
    ({"rl_num_generations": 0}, ["rl_num_generations", "0", ">= 2"]),
    ({"seed": 10**20}, ["seed", str(10**20), "<= 2147483647"]),
    ({"data_train_size": 100000}, ["data_train_size", "100000", "toy"]),
    ({"data_eval_size": -2}, ["data_eval_size", "-2", ">= 0"]),
    ({"model_num_heads": 3}, ["model_num_heads", "must divide"]),
    ({"compute_device": "tpu"}, ["compute_device", "'tpu'", "auto, cpu, cuda"]),
    ({"data_math_source": "x.jsonl"}, ["data_math_source", "scale 'full'"]),
    ({"scale": "full", "model": "toy"}, ["model", "toy model", "scale 'full'"]),
    ({"rl_steps": 2.5}, ["rl_steps", "2.5", "float", "integer"]),
    ({"warmup_steps": "ten"}, ["warmup_steps", "'ten'", "str"]),
    ({"seed": True}, ["seed", "True", "bool"]),
    ({"rl_lr": "fast"}, ["rl_lr", "'fast'", "number"]),
    ({"rl_precision": "fp8"}, ["rl_precision", "'fp8'", "fp32, bf16"]),
    ({"rl_num_generations": 1}, ["rl_num_generations", ">= 2"]),
    ({"model": "gpt-5"}, ["model", "'gpt-5'", "toy"]),
    ({"model": "Qwen/Qwen3-4B"}, ["model", "not a toy model", "scale='full'"]),
    ({"scale": "full", "model": "not a model!"}, ["model", "unknown model name", "Hugging Face id"]),
    ({"model": 7}, ["model", "7", "int"]),
    ({"rl_stepz": 5}, ["unknown parameter", "'rl_stepz'", "did you mean 'rl_steps'", "valid parameters"]),
    ({"run_dir": 5}, ["run_dir", "5"]),
])
def test_each_bad_parameter_names_field_value_and_choices(params, fragments):
    with pytest.raises(ConfigError) as error:
        RunConfig.from_params(**params)
    for fragment in fragments:
        assert fragment in str(error.value)


def test_full_scale_accepts_hub_ids_and_local_model_directories(tmp_path):
    assert RunConfig.from_params(scale="full", model="org/some-model").model.name == "org/some-model"
    (tmp_path / "config.json").write_text("{}")
    assert RunConfig.from_params(scale="full", model=str(tmp_path)).model.name == str(tmp_path)
    with pytest.raises(ConfigError, match="no config.json"):
        RunConfig.from_params(scale="full", model=str(tmp_path.parent))


def test_order_parsing_accepts_arrows_commas_and_lists():
    assert parse_order("Code -> Math -> QA -> CW") == ("code", "math", "qa", "cw")
    assert parse_order(["qa", "math"]) == ("qa", "math")


def test_none_keeps_the_preset_and_every_name_is_accepted():
    assert RunConfig.from_params(rl_steps=None).rl.steps == RunConfig().rl.steps
    defaults = RunConfig().to_params()
    assert sorted(defaults) == sorted(parameter_names())


def test_run_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("MDRL_RUN_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert RunConfig.from_params(seed=2).resolved_run_dir == tmp_path / "runs" / "toy-seed2"
    monkeypatch.setenv("MDRL_RUN_DIR", str(tmp_path / "elsewhere"))
    assert RunConfig().resolved_run_dir == tmp_path / "elsewhere"
    assert RunConfig.from_params(run_dir=str(tmp_path / "x")).resolved_run_dir == tmp_path / "x"


def test_cache_fields_cover_exactly_the_named_groups():
    a = RunConfig.from_params(rl_lr=1e-4)
    b = RunConfig.from_params(rl_lr=2e-4)
    assert a.fields_for("model", "warmup") == b.fields_for("model", "warmup")
    assert a.fields_for("rl") != b.fields_for("rl")


def test_run_dir_must_be_a_writable_directory(tmp_path):
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        RunConfig.from_params(run_dir=str(afile))
    with pytest.raises(ConfigError, match="which is a file"):
        RunConfig.from_params(run_dir=str(afile / "below"))
    assert RunConfig.from_params(run_dir=str(tmp_path / "new" / "deeper")).run_dir.endswith("deeper")


def test_run_parameters_are_declared_with_help():
    from mdrl_lib.config import parameter_declarations

    declared = parameter_declarations()
    assert set(parameter_names()) <= set(declared)
    assert all(p.help for p in declared.values())


def test_ints_are_accepted_for_floats_and_kept_as_floats():
    assert RunConfig.from_params(rl_lr=1).rl.lr == 1.0 and isinstance(RunConfig.from_params(rl_lr=1).rl.lr, float)


def test_a_list_of_rates_accepts_one_number_alone_and_checks_each():
    from mdrl_lib.recipes.nb01 import Params

    assert Params(rate_grid="5e-4, 1e-5").rate_grid == "0.0005,1e-05"
    assert Params(rate_grid=1e-5).rate_grid == "1e-05"  # as the CLI reads "-p rate_grid 1e-5"
    for bad in ("5e-4,zero", "", "5e-4,-1", True, [1e-5]):
        with pytest.raises(ConfigError, match="rate_grid: expected comma-separated numbers"):
            Params(rate_grid=bad)

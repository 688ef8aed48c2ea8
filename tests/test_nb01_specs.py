"""Notebook 01's cached analyses (mdrl_lib.edits): their keys, and build + open on a tiny kit against the
functions they cache."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pandas as pd
import pytest
import torch
from pandas.testing import assert_frame_equal

from mdrl_lib.config import RunConfig
from mdrl_lib.edits import (CURVE_ABS_TOLS, CURVE_REL_TOLS, DenseControlSparsity, EditSparsity, NeuronMagnitudes,
                            RoundedScores, dense_control, neuron_edit_magnitude, paper_criterion_rows,
                            paper_criterion_table, sparsity_table)
from mdrl_lib.kit import Kit
from mdrl_lib.specs import Base, GradientSteps, ObjectiveBatch, Scores, Spec, Stage


@pytest.fixture
def kit(tmp_path):
    return Kit(RunConfig.from_params(run_dir=str(tmp_path)))


def test_an_edit_sparsity_key_covers_both_checkpoints_and_every_threshold(kit):
    math, code = Stage(Base(), "math"), Stage(Base(), "code")
    spec = EditSparsity(Base(), math)
    assert kit.key(spec) == kit.key(EditSparsity(Base(), Stage(Base(), "math")))
    assert kit.key(spec) == kit.key(EditSparsity(Base(), math, abs_tols=list(CURVE_ABS_TOLS)))  # normalised
    others = [EditSparsity(Base(), code), EditSparsity(code, math),
              EditSparsity(Base(), Stage(Base(), "math", lr=1e-5)),
              EditSparsity(Base(), math, abs_tol=1e-6), EditSparsity(Base(), math, rel_tol=1e-2),
              EditSparsity(Base(), math, abs_tols=(1e-7,)), EditSparsity(Base(), math, rel_tols=(1e-3,)),
              DenseControlSparsity(Base(), math)]
    keys = {kit.key(spec)} | {kit.key(s) for s in others}
    assert len(keys) == len(others) + 1
    # a bf16 run's stage is another checkpoint, so its tables are others too
    bf16 = Kit(RunConfig.from_params(run_dir=kit.config.run_dir, rl_precision="bf16"))
    assert bf16.key(spec) != kit.key(spec)
    assert bf16.key(EditSparsity(Base(), Base())) == kit.key(EditSparsity(Base(), Base()))


def test_a_dense_control_key_covers_its_seed(kit):
    math = Stage(Base(), "math")
    assert kit.key(DenseControlSparsity(Base(), math, seed=1)) != kit.key(DenseControlSparsity(Base(), math))
    assert kit.key(DenseControlSparsity(Base(), math, seed=0)) == kit.key(DenseControlSparsity(Base(), math))
    with pytest.raises(ValueError, match="seed"):
        DenseControlSparsity(Base(), math, seed=-1)
    with pytest.raises(ValueError, match="abs_tols"):
        EditSparsity(Base(), math, abs_tols=(0.0,))


def test_magnitude_and_rounded_score_keys(kit):
    math = Stage(Base(), "math")
    seed1 = Stage(Base(), "math", rl_seed=1)
    assert kit.key(NeuronMagnitudes(Base(), math)) != kit.key(NeuronMagnitudes(Base(), seed1))
    assert kit.key(NeuronMagnitudes(Base(), math)) == kit.key(NeuronMagnitudes(Base(), Stage(Base(), "math")))
    rounded = RoundedScores(Base())
    assert kit.key(rounded) != kit.key(Scores(Base())) and kit.key(rounded).startswith("rounded-scores-")
    assert kit.key(RoundedScores(math)) != kit.key(rounded)
    longer = Kit(RunConfig.from_params(run_dir=kit.config.run_dir, rl_max_completion_length=40))
    assert longer.key(rounded) != kit.key(rounded)  # scored with longer completions: other results
    with pytest.raises(ValueError, match="precision"):
        RoundedScores(Base(), "fp16")
    assert [s.kind for s in EditSparsity(Base(), math).inputs()] == ["base", "stage"]


# ---------------------------------------------------------------------------------- built on a tiny kit


@dataclass(frozen=True)
class RoundedCopy(Spec):
    """The base saved with every weight already rounded to bf16 (a test artifact)."""

    kind: ClassVar[str] = "test-rounded-copy"

    def inputs(self):
        return (Base(),)

    def key_fields(self, kit):
        return {"of": kit.key(Base())}

    def build(self, kit, directory: Path, progress: bool) -> dict:
        from mdrl_lib.models import save_model

        model, tokenizer = kit.load(Base(), placement="train")
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.copy_(parameter.to(torch.bfloat16).float())
        save_model(model, tokenizer, directory)
        return {}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("nb01-run")
    return Kit(RunConfig.from_params(run_dir=str(run_dir), warmup_steps=20, data_eval_size=6, model_hidden_size=32,
                                     model_num_layers=1, model_num_heads=2, model_intermediate_size=64))


@pytest.fixture(scope="module")
def moved(tiny):
    spec = GradientSteps(Base(), ObjectiveBatch(Base(), "cw", prompts=4, samples=2, min_score=0.0), steps=2, lr=0.05)
    tiny.get(spec, progress=False)
    return spec


def test_edit_sparsity_opens_to_exactly_what_the_functions_compute(tiny, moved):
    spec = EditSparsity(Base(), moved)
    tables = tiny.open(spec, progress=False)
    before, after = tiny.weights_file(Base()), tiny.weights_file(moved)
    assert_frame_equal(tables.rows, paper_criterion_rows(before, after), check_exact=True)
    for by in ((), ("module",), ("layer",), ("tensor",)):
        assert_frame_equal(tables.criterion(by), paper_criterion_table(before, after, by=by), check_exact=True)
    sweep = sparsity_table(before, after, by=(), abs_tols=CURVE_ABS_TOLS, rel_tols=CURVE_REL_TOLS)
    assert_frame_equal(tables.sweep, sweep, check_exact=True)
    overall = tables.criterion().set_index("precision")
    assert tiny.get(spec).metrics["entries"] == int(overall["entries"].iloc[0])
    assert 0 < overall.loc["fp32", "share"] < 1


def test_a_checkpoint_against_itself_is_unchanged_everywhere(tiny):
    tables = tiny.open(EditSparsity(Base(), Base()), progress=False)
    assert (tables.criterion()["share"] == 1.0).all() and (tables.criterion()["relative_l2"] == 0.0).all()
    assert (tables.sweep["share"] == 1.0).all()


def test_the_dense_control_keeps_only_its_tables_and_matches_the_edits_size(tiny, moved, tmp_path):
    spec = DenseControlSparsity(Base(), moved, seed=3)
    tables = tiny.open(spec, progress=False)
    assert sorted(p.name for p in tiny.path(spec).iterdir() if p.suffix != ".json") == ["criterion_rows.csv",
                                                                                        "sweep.csv"]
    before = tiny.weights_file(Base())
    control = dense_control(before, tiny.weights_file(moved), tmp_path / "control.safetensors", seed=3)
    assert_frame_equal(tables.rows, paper_criterion_rows(before, control), check_exact=True)
    # the same norm per tensor as the edit: the same relative L2 per tensor in fp32
    edit = tiny.open(EditSparsity(Base(), moved), progress=False)
    by_tensor = {name: t.criterion(("tensor",)).query("precision == 'fp32'").set_index("tensor")["relative_l2"]
                 for name, t in (("edit", edit), ("control", tables))}
    pd.testing.assert_series_equal(by_tensor["control"], by_tensor["edit"], rtol=1e-5)


def test_neuron_magnitudes_open_in_layer_order_in_both_precisions(tiny, moved):
    opened = tiny.open(NeuronMagnitudes(Base(), moved), progress=False)
    before, after = tiny.weights_file(Base()), tiny.weights_file(moved)
    assert list(opened) == ["fp32", "bf16"]
    for precision, by_layer in opened.items():
        expected = neuron_edit_magnitude(before, after, precision=precision)
        assert list(by_layer) == list(expected)
        for layer, values in expected.items():
            assert torch.equal(by_layer[layer], values)
    assert opened["fp32"][next(iter(opened["fp32"]))].shape == (64,)


def test_rounded_scores_are_the_scores_of_the_rounded_weights(tiny):
    rounded = tiny.open(RoundedScores(Base()), progress=False)
    copy = tiny.item_results(RoundedCopy())
    columns = ["domain", "item", "completion", "score"]
    assert_frame_equal(rounded[columns], copy[columns])
    # rounding twice changes nothing
    assert_frame_equal(tiny.open(RoundedScores(RoundedCopy()), progress=False)[columns], copy[columns])
    metrics = tiny.get(RoundedScores(Base())).metrics
    assert metrics["precision"] == "bf16"
    assert metrics["scores"]["cw"] == pytest.approx(rounded.query("domain == 'cw'")["score"].mean(), abs=1e-6)

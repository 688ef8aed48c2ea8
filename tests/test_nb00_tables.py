"""Notebook 00's tables (mdrl_lib.recipes.nb00): the example prompts, the split sizes and the verifier demo."""
from __future__ import annotations

from mdrl_lib.config import RunConfig
from mdrl_lib.domains.base import DOMAIN_NAMES, DOMAIN_TITLES
from mdrl_lib.kit import Kit
from mdrl_lib.recipes import nb00


def test_the_example_tables_show_each_domains_first_prompts_and_its_split_sizes(tmp_path):
    kit = Kit(RunConfig.from_params(run_dir=str(tmp_path)))
    params = nb00.Params(run_dir=str(tmp_path), examples_per_domain=2)
    examples, sizes = nb00.example_tables(kit, params)
    assert list(examples["domain"]) == [DOMAIN_TITLES[n] for n in DOMAIN_NAMES for _ in range(2)]
    first = kit.splits("math").train[0]
    math = examples[examples["domain"] == "Math"].iloc[0]
    assert (math["prompt"], math["reference answer"]) == (first.prompt, first.answer)
    assert sizes.loc["QA", "eval"] == len(kit.splits("qa").eval) and list(sizes.index) == list(DOMAIN_TITLES.values())


def test_the_verifier_demo_scores_right_1_and_wrong_and_malformed_below(tmp_path):
    kit = Kit(RunConfig.from_params(run_dir=str(tmp_path)))
    demo = nb00.verifier_demo(kit)
    assert len(demo) == 3 * len(DOMAIN_NAMES)
    by_kind = demo.groupby("kind")["score"]
    assert (by_kind.min()["right"], by_kind.max()["wrong"] < 1, by_kind.max()["malformed"] < 1) == (1.0, True, True)
    assert demo.groupby("domain")["prompt"].nunique().eq(1).all()  # one prompt per domain, three answers

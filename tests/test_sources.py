"""Full-scale domains (mdrl_lib.domains.sources) on tiny fixture files in each source's real schema."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from mdrl_lib.domains.base import _REGISTRY
from mdrl_lib.domains.sources import (
    CODE_INSTRUCTION,
    MATH_INSTRUCTION,
    QA_INSTRUCTION,
    CodeDomain,
    CWDomain,
    MathDomain,
    OverlapF1Scorer,
    QADomain,
    extract_choice_letter,
    extract_program,
    last_boxed,
    stratified_sample,
    truncate_to_tokens,
)
from mdrl_lib.domains.sources import tests_from_ground_truth as parse_tests  # not collected by pytest

FIXTURES = Path(__file__).parent / "fixtures" / "full"
CW_FILES = [str(FIXTURES / f"cw_{name}.jsonl") for name in ("sonnet", "gemini", "kimi", "qwen")]


def math_domain(**options) -> MathDomain:
    return MathDomain(source=str(FIXTURES / "openr1_math.jsonl"), eval_source=str(FIXTURES / "aime25.jsonl"), **options)


def code_domain(**options) -> CodeDomain:
    return CodeDomain(source=str(FIXTURES / "klear_code.jsonl"), **options)


def qa_domain(**options) -> QADomain:
    return QADomain(source=str(FIXTURES / "supergpqa.jsonl"), test_source=str(FIXTURES / "mmlu_pro.jsonl"), **options)


def cw_domain(**options) -> CWDomain:
    return CWDomain(sources=CW_FILES, **options)


# (factory, train size, eval size) small enough for the fixtures
DOMAINS = {
    "math": (math_domain, 5, 3),
    "code": (code_domain, 4, 2),
    "qa": (qa_domain, 6, 3),
    "cw": (cw_domain, 8, 3),
}


@pytest.fixture(autouse=True)
def no_download_count_ping(monkeypatch):
    """``datasets`` pings the hub to count loads even of local files; no hub is reachable here."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_UPDATE_DOWNLOAD_COUNTS", False)


class WordTokenizer:
    """A stand-in tokenizer: one token per whitespace-separated word."""

    def encode(self, text: str, add_special_tokens: bool = True) -> list[str]:
        return text.split()

    def decode(self, ids: list[str]) -> str:
        return " ".join(ids)


def as_bytes(examples) -> bytes:
    return json.dumps([[e.domain, e.prompt, e.answer, e.spec] for e in examples]).encode()


# ----------------------------------------------------------------------------- every domain


def test_classes_are_registered_at_full_scale():
    assert _REGISTRY[("full", "math")] is MathDomain
    assert _REGISTRY[("full", "code")] is CodeDomain
    assert _REGISTRY[("full", "qa")] is QADomain
    assert _REGISTRY[("full", "cw")] is CWDomain


@pytest.mark.parametrize("name", DOMAINS)
def test_splits_are_sized_disjoint_and_byte_identical_on_rerun(name):
    factory, train_size, eval_size = DOMAINS[name]
    splits = factory().build_splits(seed=3, train_size=train_size, eval_size=eval_size)
    again = factory().build_splits(seed=3, train_size=train_size, eval_size=eval_size)
    assert (len(splits.train), len(splits.eval)) == (train_size, eval_size)
    assert not {e.prompt for e in splits.train} & {e.prompt for e in splits.eval}
    assert as_bytes(splits.train) == as_bytes(again.train) and as_bytes(splits.eval) == as_bytes(again.eval)
    assert all(e.domain == name for e in splits.train + splits.eval)
    other = factory().build_splits(seed=4, train_size=train_size, eval_size=eval_size)
    assert as_bytes(other.train + other.eval) != as_bytes(splits.train + splits.eval)


@pytest.mark.parametrize("name", DOMAINS)
def test_asking_for_more_items_than_the_source_has_names_the_counts(name):
    factory, _, _ = DOMAINS[name]
    with pytest.raises(ValueError, match=r"asked for \d+ items \(998 train.*\) but the source has only \d+ usable ones"):
        factory().build_splits(seed=0, train_size=998, eval_size=2)


@pytest.mark.parametrize("name", DOMAINS)
def test_missing_local_file_fails_in_the_constructor_naming_the_path(name, tmp_path):
    missing = str(tmp_path / "nowhere" / "data.jsonl")
    options = {"cw": {"sources": [missing]}}.get(name, {"source": missing})
    constructor = {"math": MathDomain, "code": CodeDomain, "qa": QADomain, "cw": CWDomain}[name]
    with pytest.raises(FileNotFoundError, match="nowhere/data.jsonl"):
        constructor(**options)


def test_a_missing_column_is_named_with_the_available_ones():
    domain = math_domain(problem_column="question_text")
    with pytest.raises(ValueError, match=r"no column named 'question_text'; available columns: problem, solution"):
        domain.build_splits(seed=0, train_size=2, eval_size=2)


def test_prompts_are_truncated_but_keep_their_instruction():
    assert truncate_to_tokens("abcdefghij", 2) == "abcdefgh"  # ~4 characters a token
    assert truncate_to_tokens("one two three four", 2, WordTokenizer()) == "one two"
    assert truncate_to_tokens("one two", 5, WordTokenizer()) == "one two"
    splits = math_domain(max_prompt_tokens=3, tokenizer=WordTokenizer()).build_splits(seed=0, train_size=8, eval_size=4)
    prompt = next(e.prompt for e in splits.train if e.answer == "\\sqrt{2}")
    assert prompt == f"Solve $x^2 =\n\n{MATH_INSTRUCTION}"


def test_parquet_files_load_like_jsonl(tmp_path):
    from datasets import load_dataset

    path = tmp_path / "supergpqa.parquet"
    load_dataset("json", data_files=str(FIXTURES / "supergpqa.jsonl"), split="train").to_parquet(str(path))
    from_parquet = QADomain(source=str(path), test_source=str(FIXTURES / "mmlu_pro.jsonl")).build_splits(0, 6, 3)
    from_jsonl = qa_domain().build_splits(0, 6, 3)
    assert as_bytes(from_parquet.train + from_parquet.eval) == as_bytes(from_jsonl.train + from_jsonl.eval)


def test_reward_function_follows_trl_convention():
    domain = qa_domain()
    example = domain.build_splits(seed=0, train_size=2, eval_size=1).eval[0]
    reward = domain.reward_function()
    right, wrong = f"Answer: {example.answer}", "Answer: Z"
    assert reward.__name__ == "qa_reward"
    assert reward(prompts=[example.prompt] * 2, completions=[right, wrong], spec=[example.spec] * 2) == [1.0, 0.0]


# ----------------------------------------------------------------------------- math


def test_math_loader_uses_openr1_for_training_and_aime25_for_evaluation():
    splits = math_domain().build_splits(seed=0, train_size=8, eval_size=4)
    assert {e.answer for e in splits.eval} == {"19", "24", "400", "221"}
    assert {e.answer for e in splits.train} == {"17", "\\frac{3}{4}", "4", "6", "11", "2", "12", "\\sqrt{2}"}
    assert all(e.prompt.endswith(MATH_INSTRUCTION) and json.loads(e.spec) == {"answer": e.answer} for e in splits.train)
    with pytest.raises(ValueError, match=r"asked for 30 items \(30 eval\) but the source has only 4 usable ones"):
        math_domain().build_splits(seed=0, train_size=2, eval_size=30)


@pytest.mark.parametrize(
    "completion, answer, score",
    [
        ("<think>3*4 = 12, plus 5.</think>The answer is $\\boxed{17}$.", "17", 1.0),  # right
        ("So the fraction is \\boxed{0.75}.", "\\frac{3}{4}", 1.0),  # right, other form
        ("Reduced: \\boxed{\\frac{6}{8}}", "\\frac{3}{4}", 1.0),  # right, unreduced
        ("<think>maybe \\boxed{17}</think> Final: \\boxed{18}", "17", 0.0),  # wrong final answer
        ("\\boxed{16} hmm, no: \\boxed{17}", "17", 1.0),  # the last box counts
        ("The answer is 17.", "17", 0.0),  # malformed: no box
        ("\\boxed{17", "17", 0.0),  # malformed: unclosed box
        ("\\boxed{}", "17", 0.0),  # malformed: empty box
        ("\\boxed{x = \\sqrt{2}}", "\\sqrt{2}", 1.0),
    ],
)
def test_math_verifier(completion, answer, score):
    assert math_domain().score_one(completion, {"answer": answer}) == score


def test_last_boxed_handles_nested_braces():
    assert last_boxed("\\boxed{1} then \\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert last_boxed("\\boxed{2} then \\boxed{3") == "2"
    assert last_boxed("no box") is None


# ----------------------------------------------------------------------------- code


def test_code_loader_reads_chat_prompts_and_ground_truth_tests():
    splits = code_domain().build_splits(seed=0, train_size=6, eval_size=1)
    examples = splits.train + splits.eval
    assert all(e.prompt.startswith("You are an expert Python programmer.") for e in examples)
    assert all(e.prompt.endswith(CODE_INSTRUCTION) for e in examples)
    specs = [json.loads(e.spec) for e in examples]
    assert Counter(spec["harness"] for spec in specs) == {"stdio": 6, "functional": 1}
    adder = next(spec for spec in specs if spec["tests"][0]["input"] == "1 2\n")
    assert adder["tests"] == [{"input": "1 2\n", "output": "3\n"}, {"input": "10 -3\n", "output": "7\n"}, {"input": "0 0\n", "output": "0\n"}]


def test_code_rows_without_usable_tests_are_dropped():
    # 8 fixture rows, one with pytest-style tests
    with pytest.raises(ValueError, match=r"asked for 8 items \(7 train \+ 1 eval\) but the source has only 7 usable ones"):
        code_domain().build_splits(seed=0, train_size=7, eval_size=1)


def test_tests_from_ground_truth_formats():
    stdio = json.dumps({"inputs": ["1\n", [1, 2]], "outputs": ["2\n", [3]]})
    assert parse_tests(stdio, 16) == ("stdio", [{"input": "1\n", "output": "2\n"}, {"input": "1, 2", "output": "3"}])
    assert parse_tests(stdio, 1) == ("stdio", [{"input": "1\n", "output": "2\n"}])
    harness, tests = parse_tests({"functional": "assert f(1) == 2"}, 16)
    assert harness == "functional" and [t["input"] for t in tests] == ["assert f(1) == 2"]
    assert parse_tests(json.dumps({"pytest": "def test_x(): pass"}), 16) is None
    assert parse_tests("not json", 16) is None
    assert parse_tests(json.dumps({"inputs": [], "outputs": []}), 16) is None


def test_extract_program_prefers_the_last_python_block():
    assert extract_program("```python\nprint(1)\n```\nbetter:\n```python\nprint(2)\n```") == "print(2)\n"
    assert extract_program("<think>```python\nprint(0)\n```</think>```py\nprint(3)\n```") == "print(3)\n"
    assert extract_program("```python\nprint(4)\n") == "print(4)\n"  # unclosed block runs to the end
    assert extract_program("print(5)") == "print(5)"  # no block: the whole answer


@pytest.fixture(scope="module")
def code_specs() -> dict[str, dict]:
    pytest.importorskip("mdrl_lib.sandbox")
    splits = code_domain().build_splits(seed=0, train_size=6, eval_size=1)
    specs = [json.loads(e.spec) for e in splits.train + splits.eval]
    return {
        "parity": next(s for s in specs if s["tests"][0]["output"] == "Yes\n"),
        "adder": next(s for s in specs if s["harness"] == "functional"),
    }


@pytest.mark.parametrize(
    "case, completion, score",
    [
        ("parity", "```python\nn = int(input())\nprint('Yes' if n % 2 == 0 else 'No')\n```", 1.0),  # right
        ("parity", "Easy.\n```python\nprint('Yes')\n```", 2 / 3),  # partial: 2 of 3 tests
        ("parity", "```python\nprint('Maybe')\n```", 0.0),  # wrong
        ("parity", "```python\nprint('Yes'\n```", 0.0),  # malformed: syntax error
        ("parity", "", 0.0),  # malformed: empty
        ("adder", "```python\nclass Solution:\n    def add(self, a, b):\n        print('debug')\n        return a + b\n```", 1.0),
        ("adder", "```python\nclass Solution:\n    def add(self, a, b):\n        return a * b\n```", 0.0),
        ("adder", "```python\nclass Solution:\n    def add(self, a, b):\n        return 3\n```", 0.5),
        # hostile: the pass mark written where the old harness looked for it, then a clean exit
        ("adder", "```python\nimport os, sys\nsys.__stdout__.write('__MDRL_ALL_ASSERTS_PASSED__\\n')\n"
                  "sys.__stdout__.flush()\nos._exit(0)\n```", 0.0),
        ("adder", "```python\nclass Solution:\n    def add(self, a, b):\n        class Eq:\n"
                  "            def __eq__(self, other):\n                return True\n        return Eq()\n```", 0.0),
    ],
)
def test_code_verifier_runs_tests_in_the_sandbox(code_specs, case, completion, score):
    assert code_domain().score_one(completion, code_specs[case]) == pytest.approx(score)


# ----------------------------------------------------------------------------- QA


def test_qa_loader_formats_lettered_options():
    splits = qa_domain().build_splits(seed=0, train_size=9, eval_size=3)
    example = next(e for e in splits.train + splits.eval if e.prompt.startswith("What is gcd(12, 18)?"))
    assert example.prompt == f"What is gcd(12, 18)?\n\nA) 2\nB) 3\nC) 6\nD) 9\n\n{QA_INSTRUCTION}"
    assert example.answer == "C" and json.loads(example.spec) == {"answer": "C", "n_options": 4}


def test_qa_answer_column_must_hold_option_letters():
    with pytest.raises(ValueError, match=r"supergpqa.jsonl: answer '6 N' is not one of the 4 option letters"):
        qa_domain(answer_column="answer").build_splits(seed=0, train_size=2, eval_size=1)


def test_qa_training_subset_is_stratified_by_subfield_and_difficulty():
    rows = [json.loads(line) for line in (FIXTURES / "supergpqa.jsonl").read_text().splitlines()]
    stratum = {row["question"]: (row["subfield"], row["difficulty"]) for row in rows}
    train = qa_domain().build_splits(seed=0, train_size=6, eval_size=0).train
    drawn = Counter(stratum[e.prompt.split("\n\n")[0]] for e in train)
    population = Counter(stratum.values())
    for key, size in population.items():  # each stratum within one of its exact share
        assert abs(drawn[key] - 6 * size / len(rows)) < 1


def test_qa_test_sets_avoid_training_and_validation_examples():
    domain = qa_domain()
    splits = domain.build_splits(seed=1, train_size=6, eval_size=2)
    tests = domain.build_test_sets(seed=1, train_size=6, eval_size=2, supergpqa_size=4, mmlu_pro_size=5)
    assert (len(tests["supergpqa"]), len(tests["mmlu_pro"])) == (4, 5)
    used = {e.prompt for e in splits.train + splits.eval}
    assert not used & {e.prompt for e in tests["supergpqa"]}
    assert len(used | {e.prompt for e in tests["supergpqa"]}) == 12
    assert all(e.answer in "ABCD" for e in tests["mmlu_pro"])
    with pytest.raises(ValueError, match=r"asked for 13 items \(6 train \+ 2 eval \+ 5 test\) but the source has only 12 usable ones"):
        domain.build_test_sets(seed=1, train_size=6, eval_size=2, supergpqa_size=5, mmlu_pro_size=1)
    with pytest.raises(ValueError, match=r"asked for 7 items \(7 test\) but the source has only 6 usable ones"):
        domain.build_test_sets(seed=1, train_size=6, eval_size=2, supergpqa_size=1, mmlu_pro_size=7)


@pytest.mark.parametrize(
    "completion, letter",
    [
        ("Newton's second law gives 6 N.\nAnswer: D", "D"),
        ("<think>Answer: A? no.</think>The answer is (D).", "D"),
        ("Therefore \\boxed{D}", "D"),
        ("Therefore \\boxed{\\text{D}}", "D"),
        ("D", "D"),
        ("(D).", "D"),
        ("answer: **D**", "D"),
        ("Answer: B\nOn reflection, Answer: D", "D"),
        ("I am not sure.", None),  # malformed: no letter
        ("Answer: Z", None),  # malformed: no such option
        ("\\boxed{6 N}", None),  # malformed: the value, not the letter
    ],
)
def test_extract_choice_letter(completion, letter):
    assert extract_choice_letter(completion, n_options=4) == letter


def test_qa_verifier():
    domain, spec = qa_domain(), {"answer": "D", "n_options": 4}
    assert domain.score_one("Answer: D", spec) == 1.0  # right
    assert domain.score_one("Answer: C", spec) == 0.0  # wrong
    assert domain.score_one("It is 6 N.", spec) == 0.0  # malformed
    assert domain.score_one("Answer: J", {"answer": "J", "n_options": 10}) == 1.0


# ----------------------------------------------------------------------------- stratified sampling


def test_stratified_sample_keeps_proportions_and_is_deterministic():
    rows = [{"id": i, "field": f, "level": level} for i, (f, level) in enumerate(
        [("a", "easy")] * 30 + [("a", "hard")] * 30 + [("b", "easy")] * 30 + [("c", "hard")] * 10
    )]
    drawn = stratified_sample(rows, ["field", "level"], 20, seed=0)
    assert Counter((r["field"], r["level"]) for r in drawn) == {("a", "easy"): 6, ("a", "hard"): 6, ("b", "easy"): 6, ("c", "hard"): 2}
    assert len({r["id"] for r in drawn}) == 20
    assert stratified_sample(rows, ["field", "level"], 20, seed=0) == drawn
    assert stratified_sample(rows, ["field", "level"], 20, seed=1) != drawn

    uneven = stratified_sample(rows, ["field"], 7, seed=5)  # shares 4.2, 2.1, 0.7
    assert Counter(r["field"] for r in uneven) == {"a": 4, "b": 2, "c": 1}
    assert len(stratified_sample(rows, ["field"], 100, seed=0)) == 100


def test_stratified_sample_errors_name_the_problem():
    rows = [{"field": "a"}, {"field": "b"}]
    with pytest.raises(ValueError, match="asked for 3 rows but there are only 2"):
        stratified_sample(rows, ["field"], 3, seed=0)
    with pytest.raises(ValueError, match="row has no level"):
        stratified_sample(rows, ["field", "level"], 1, seed=0)


# ----------------------------------------------------------------------------- creative writing


def test_cw_loader_concatenates_the_series():
    splits = cw_domain().build_splits(seed=0, train_size=10, eval_size=2)
    prompts = {e.prompt for e in splits.train + splits.eval}
    assert len(prompts) == 12 and "Write a haiku about the first frost." in prompts
    haiku = next(e for e in splits.train + splits.eval if e.prompt == "Write a haiku about the first frost.")
    assert haiku.answer.startswith("Grass stiff with silver")
    assert json.loads(haiku.spec) == {"prompt": haiku.prompt, "reference": haiku.answer}


def test_cw_column_candidates_and_think_stripped_references(tmp_path):
    path = tmp_path / "cw.jsonl"
    rows = [{"prompt": f"Write line {i}.", "output": f"<think>plan</think>Line {i} written."} for i in range(3)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    splits = CWDomain(sources=str(path)).build_splits(seed=0, train_size=2, eval_size=1)
    assert sorted(e.answer for e in splits.train + splits.eval) == ["Line 0 written.", "Line 1 written.", "Line 2 written."]


def test_overlap_scorer():
    score = OverlapF1Scorer()
    reference = "The rain taps slow upon the tin roof"
    assert score(reference, reference, "p") == pytest.approx(1.0)  # right
    assert score("<think>draft</think>" + reference, reference, "p") == pytest.approx(1.0)
    partial = score("The rain taps upon the old barn", reference, "p")
    assert 0.2 < partial < 0.8  # partial
    assert score("Quantum chromodynamics binds quarks", reference, "p") == 0.0  # wrong
    assert score("", reference, "p") == 0.0  # malformed: empty
    assert score("!!! ???", reference, "p") == 0.0  # malformed: no words


def test_cw_scorer_hook_receives_reference_and_prompt_and_is_clipped():
    calls = []

    def judge(completion: str, reference: str, prompt: str) -> float:
        calls.append((completion, reference, prompt))
        return 1.7

    domain = cw_domain(scorer=judge)
    example = domain.build_splits(seed=0, train_size=1, eval_size=1).eval[0]
    assert domain.score(["my story"], [example.spec]) == [1.0]
    assert calls == [("my story", example.answer, example.prompt)]

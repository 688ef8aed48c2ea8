"""The paper's four domains at full scale: real datasets loaded through ``datasets``, and verifiers.

Introduced in notebook ``00_toy_world`` (the full-scale switch). Each class below is registered as
``get_domain(name, "full", **options)``; ``source`` takes a hub dataset id or a local
``.jsonl`` / ``.json`` / ``.parquet`` file in the same schema (``split`` and ``config`` only apply
to hub ids). Column names are constructor options; where a source's schema is uncertain the option
accepts a tuple of candidate names and the first one present is used.

Defaults follow the paper: 5,120 training prompts per domain, prompts truncated to 2,048 tokens
(with ``tokenizer=`` any object with ``encode``/``decode``, else about 4 characters per token),
30 AIME25 problems for Math validation and 50 held-out examples for every other domain.

Prompt templates (plain strings; the body is truncated, the instruction is always kept):

- Math: ``{problem}\\n\\nPlease reason step by step, and put your final answer within \\boxed{}.``
- Code: ``{problem}\\n\\nReturn your complete Python program in a single ```python code block.``
- QA: ``{question}\\n\\nA) ...\\nB) ...\\n\\nChoose the correct option. End your response with a
  line of the form "Answer: X", where X is the letter of the option.``
- CW: the dataset's instruction, unchanged.

Verifiers read only the text after the last ``</think>`` when there is one (thinking models).
"""
from __future__ import annotations

import json
import random
import re
import threading
from collections import Counter, defaultdict
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

from mdrl_lib.domains.base import Domain, Example, Splits, register

PAPER_TRAIN_SIZE = 5120
PAPER_EVAL_SIZE = 50
AIME25_SIZE = 30
SUPERGPQA_TEST_SIZE = 2141
MMLU_PRO_TEST_SIZE = 1203
PAPER_MAX_PROMPT_TOKENS = 2048
CHARS_PER_TOKEN = 4
LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")
CW_SOURCES: tuple[str, ...] = (
    "Crownelius/Creative-Writing-Sonnet4.6-800x",
    "Crownelius/Creative-Writing-Gemini3Pro-2700x",
    "Crownelius/Creative-Writing-Reasoning-KimiK2.5-600x",
    "Crownelius/Creative-Writing-Qwen3.5Plus-2000x",
)

MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
CODE_INSTRUCTION = "Return your complete Python program in a single ```python code block."
QA_INSTRUCTION = (
    'Choose the correct option. End your response with a line of the form "Answer: X", '
    "where X is the letter of the option."
)
OPTION_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# The "output" of an assert-based test in a spec. Only a label: the verdict comes from the
# sandbox's judge, never from anything the program prints.
FUNCTIONAL_PASS_MARK = "__MDRL_ALL_ASSERTS_PASSED__"
# Run before the program and before the test code, in both of their namespaces.
FUNCTIONAL_IMPORTS = (
    "from typing import *\n"
    "import bisect, collections, functools, heapq, itertools, math, string\n"
    "from collections import Counter, defaultdict, deque\n"
)

Columns = Mapping[str, "str | Sequence[str]"]


# ----------------------------------------------------------------------------- loading and sampling


def check_source(source: str) -> str:
    """``source`` unchanged; a local file path that does not exist raises, naming the path.

    Introduced in notebook ``00_toy_world`` (full-scale switch). Called by every constructor, so a
    typo fails before any dataset is loaded.
    """
    if source.endswith(LOCAL_SUFFIXES) and not Path(source).is_file():
        raise FileNotFoundError(f"data file not found: {Path(source).resolve()}")
    return source


def load_table(source: str, split: str, config: str | None, columns: Columns):
    """A ``datasets.Dataset`` of a hub id or local file with only ``columns``, under their canonical
    names (Arrow-backed: rows are read when indexed).

    Introduced in notebook ``00_toy_world`` (full-scale switch). ``columns`` maps a canonical name
    to the source's column name, or to candidate names of which the first present is used.
    """
    check_source(source)
    from datasets import load_dataset

    if source.endswith(LOCAL_SUFFIXES):
        builder = "parquet" if source.endswith(".parquet") else "json"
        dataset = load_dataset(builder, data_files=source, split="train")
    else:
        dataset = load_dataset(source, config, split=split)
    available = list(dataset.column_names)
    chosen = {canonical: _pick_column(source, available, wanted) for canonical, wanted in columns.items()}
    dataset = dataset.select_columns(list(chosen.values()))
    return dataset.rename_columns({column: canonical for canonical, column in chosen.items() if column != canonical})


def load_rows(source: str, split: str, config: str | None, columns: Columns) -> list[dict]:
    """``load_table`` read into a list of row dicts.

    Introduced in notebook ``00_toy_world`` (full-scale switch).
    """
    return load_table(source, split, config, columns).to_list()


def _pick_column(source: str, available: list[str], wanted: str | Sequence[str]) -> str:
    candidates = [wanted] if isinstance(wanted, str) else list(wanted)
    for name in candidates:
        if name in available:
            return name
    raise ValueError(
        f"{source}: no column named {' or '.join(map(repr, candidates))}; available columns: "
        f"{', '.join(available)} (pass the matching *_column option)"
    )


def require_rows(what: str, available: int, requested: Mapping[str, int]) -> None:
    """Raise a ValueError naming the counts when ``requested`` sizes exceed ``available`` rows.

    Introduced in notebook ``00_toy_world`` (full-scale switch).
    """
    total = sum(requested.values())
    if total > available:
        asked = " + ".join(f"{n} {name}" for name, n in requested.items())
        raise ValueError(f"{what}: asked for {total} items ({asked}) but the source has only {available} usable ones")


def unique_by(rows: list[dict], key: str) -> list[dict]:
    """``rows`` without later repeats of the same ``row[key]`` (so splits never share a prompt).

    Introduced in notebook ``00_toy_world`` (full-scale switch).
    """
    seen: set[str] = set()
    kept = []
    for row in rows:
        if row[key] not in seen:
            seen.add(row[key])
            kept.append(row)
    return kept


def stratified_sample(rows: Sequence[Mapping], keys: Sequence[str], n: int, seed: int) -> list:
    """``n`` rows drawn without replacement so each stratum keeps its share of ``rows``.

    Introduced in notebook ``00_toy_world`` (full-scale switch). A stratum is one combination of
    the values of ``keys``. Stratum quotas are ``n * size / len(rows)`` rounded by the largest
    remainder (ties broken at random), so every quota is within one of its exact share. Rows are
    drawn at random within strata and the result is shuffled; everything depends only on ``seed``.
    """
    if n > len(rows):
        raise ValueError(f"stratified sample: asked for {n} rows but there are only {len(rows)}")
    strata: dict[tuple[str, ...], list] = defaultdict(list)
    for row in rows:
        missing = [key for key in keys if key not in row]
        if missing:
            raise ValueError(f"stratified sample: row has no {', '.join(missing)} (keys {list(keys)})")
        strata[tuple(str(row[key]) for key in keys)].append(row)
    rng = random.Random(seed)
    order = sorted(strata)
    quota = {s: n * len(strata[s]) // len(rows) for s in order}
    remainder = {s: n * len(strata[s]) % len(rows) for s in order}
    rng.shuffle(order)
    for stratum in sorted(order, key=lambda s: -remainder[s])[: n - sum(quota.values())]:
        quota[stratum] += 1
    chosen = []
    for stratum in sorted(order):
        chosen.extend(rng.sample(strata[stratum], quota[stratum]))
    rng.shuffle(chosen)
    return chosen


def truncate_to_tokens(text: str, max_tokens: int, tokenizer: Any = None) -> str:
    """``text`` cut to at most ``max_tokens`` tokens of ``tokenizer`` (else ~4 characters a token).

    Introduced in notebook ``00_toy_world`` (full-scale switch).
    """
    if tokenizer is None:
        return text[: max_tokens * CHARS_PER_TOKEN]
    ids = tokenizer.encode(text, add_special_tokens=False)
    return text if len(ids) <= max_tokens else tokenizer.decode(ids[:max_tokens])


def _spec(**fields: Any) -> str:
    return json.dumps(fields, sort_keys=True, ensure_ascii=False)


def _shuffled(items: Sequence, seed: int) -> list:
    items = list(items)
    random.Random(seed).shuffle(items)
    return items


# ----------------------------------------------------------------------------- completion parsing


def final_response(completion: str) -> str:
    """The text after the last ``</think>``, or the whole completion when there is none.

    Introduced in notebook ``00_toy_world`` (full-scale switch).
    """
    return completion.rsplit("</think>", 1)[-1]


def last_boxed(text: str) -> str | None:
    """The content of the last balanced ``\\boxed{...}`` in ``text``, or None.

    Introduced in notebook ``00_toy_world`` (full-scale switch).
    """
    start = text.rfind("\\boxed{")
    while start != -1:
        depth, begin = 0, start + len("\\boxed{")
        for i in range(begin - 1, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                return text[begin:i]
        start = text.rfind("\\boxed{", 0, start)
    return None


_FENCE = re.compile(r"```[ \t]*(?:python3?|py)[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)


def extract_program(completion: str) -> str:
    """The last ```python fenced block of the final response (an unclosed one runs to the end),
    or the whole final response when it has no such block.

    Introduced in notebook ``00_toy_world`` (full-scale switch).
    """
    response = final_response(completion)
    blocks = _FENCE.findall(response)
    return blocks[-1] if blocks else response


_ANSWER_LINE = re.compile(r"(?i:answer)(?:\s+is)?\s*[:：]?\s*\**\s*\(?([A-Z])\)?(?![A-Za-z])")
_LONE_LETTER = re.compile(r"^\s*\(?([A-Z])\)?[.:)]?\s*$")
_BOXED_LETTER = re.compile(r"^\s*(?:\\text\{)?\s*\(?([A-Z])\)?(?:[\s.:)}]|$)")


def extract_choice_letter(completion: str, n_options: int) -> str | None:
    """The option letter a completion chose, or None.

    Introduced in notebook ``00_toy_world`` (full-scale switch). Looks, in order, at the last
    ``\\boxed{C}``, the last "Answer: C" / "the answer is (C)", then a reply that is a lone letter;
    letters beyond the ``n_options``-th do not count.
    """
    response = final_response(completion)
    boxed = last_boxed(response)
    letters = []
    if boxed is not None and (found := _BOXED_LETTER.match(boxed)):
        letters.append(found.group(1))
    letters += _ANSWER_LINE.findall(response)[-1:]
    if found := _LONE_LETTER.match(response):
        letters.append(found.group(1))
    return next((letter for letter in letters if letter in OPTION_LETTERS[:n_options]), None)


# ----------------------------------------------------------------------------- math


@lru_cache(maxsize=65536)
def _parsed_gold(answer: str, timeout_s: int | None) -> list:
    from math_verify import parse

    return parse(f"\\boxed{{{answer}}}", parsing_timeout=timeout_s)


def math_answers_match(predicted: str, gold: str) -> bool:
    """Whether ``predicted`` equals ``gold`` as mathematics, by math-verify ``parse``/``verify``.

    Introduced in notebook ``00_toy_world`` (full-scale switch). math-verify's timeouts use
    SIGALRM, which only the main thread may set, so other threads run without a timeout.
    """
    from math_verify import parse, verify

    timeout_s = 5 if threading.current_thread() is threading.main_thread() else None
    target = parse(f"\\boxed{{{predicted}}}", parsing_timeout=timeout_s)
    return bool(verify(_parsed_gold(gold, timeout_s), target, timeout_seconds=timeout_s))


@register("full", "math")
class MathDomain(Domain):
    """OpenR1-Math training prompts and AIME25 validation; reward 1 when the last ``\\boxed{}`` of
    the answer equals the reference by math-verify, else 0.

    Introduced in notebook ``00_toy_world`` (full-scale switch). Training rows with an empty answer,
    or whose problem is also an evaluation problem, are dropped.
    """

    name = "math"
    title = "Math"

    @classmethod
    def run_options(cls, data) -> dict:
        """``data_math_source`` and ``data_math_eval_source`` when set."""
        return {k: v for k, v in (("source", data.math_source), ("eval_source", data.math_eval_source)) if v}

    def __init__(
        self,
        source: str = "open-r1/OpenR1-Math-220k",
        split: str = "train",
        config: str | None = "default",
        problem_column: str | Sequence[str] = "problem",
        answer_column: str | Sequence[str] = "answer",
        eval_source: str = "math-ai/aime25",
        eval_split: str = "test",
        eval_config: str | None = None,
        eval_problem_column: str | Sequence[str] = ("problem", "question"),
        eval_answer_column: str | Sequence[str] = "answer",
        max_prompt_tokens: int = PAPER_MAX_PROMPT_TOKENS,
        tokenizer: Any = None,
    ) -> None:
        self.source, self.split, self.config = check_source(source), split, config
        self.columns = {"problem": problem_column, "answer": answer_column}
        self.eval_source, self.eval_split, self.eval_config = check_source(eval_source), eval_split, eval_config
        self.eval_columns = {"problem": eval_problem_column, "answer": eval_answer_column}
        self.max_prompt_tokens, self.tokenizer = max_prompt_tokens, tokenizer

    def build_splits(self, seed: int = 0, train_size: int = PAPER_TRAIN_SIZE, eval_size: int = AIME25_SIZE) -> Splits:
        """``train_size`` OpenR1 problems and ``eval_size`` AIME25 problems, both drawn with ``seed``."""
        eval_rows = self._rows(self.eval_source, self.eval_split, self.eval_config, self.eval_columns)
        eval_problems = {row["problem"] for row in eval_rows}
        train_rows = [
            row
            for row in self._rows(self.source, self.split, self.config, self.columns)
            if row["problem"] not in eval_problems
        ]
        require_rows(f"math training source {self.source}", len(train_rows), {"train": train_size})
        require_rows(f"math evaluation source {self.eval_source}", len(eval_rows), {"eval": eval_size})
        return Splits(
            train=[self._example(row) for row in _shuffled(train_rows, seed)[:train_size]],
            eval=[self._example(row) for row in _shuffled(eval_rows, seed)[:eval_size]],
        )

    def _rows(self, source: str, split: str, config: str | None, columns: Columns) -> list[dict]:
        rows = [
            {"problem": str(row["problem"]), "answer": str(row["answer"]).strip()}
            for row in load_rows(source, split, config, columns)
        ]
        return unique_by([row for row in rows if row["answer"]], "problem")

    def _example(self, row: dict) -> Example:
        body = truncate_to_tokens(row["problem"], self.max_prompt_tokens, self.tokenizer)
        return Example(
            domain=self.name,
            prompt=f"{body}\n\n{MATH_INSTRUCTION}",
            answer=row["answer"],
            spec=_spec(answer=row["answer"]),
        )

    def score_one(self, completion: str, spec: dict) -> float:
        predicted = last_boxed(final_response(completion))
        if predicted is None or not predicted.strip():
            return 0.0
        return 1.0 if math_answers_match(predicted, spec["answer"]) else 0.0


# ----------------------------------------------------------------------------- code


def tests_from_ground_truth(ground_truth: Any, max_tests: int) -> tuple[str, list[dict]] | None:
    """``(harness, tests)`` from a KlearReasoner / Code-R1 ground truth, or None if unsupported.

    Introduced in notebook ``00_toy_world`` (full-scale switch). ``{"inputs": [...], "outputs":
    [...]}`` gives stdin/stdout tests (harness ``"stdio"``; list items are joined by ", " as
    Klear's verifier does). ``{"functional": code or [code, ...]}`` gives assert-based cases
    (harness ``"functional"``; each test's "input" is the case's code, its "output" the label
    FUNCTIONAL_PASS_MARK): the sandbox's judge runs each case against the program's functions
    in a separate process. Other formats (``pytest``, files) give None. At most ``max_tests``
    tests are kept, the first ones.
    """
    if isinstance(ground_truth, str):
        try:
            ground_truth = json.loads(ground_truth)
        except json.JSONDecodeError:
            return None
    if not isinstance(ground_truth, dict):
        return None
    if "inputs" in ground_truth and "outputs" in ground_truth:
        pairs = list(zip(ground_truth["inputs"], ground_truth["outputs"]))[:max_tests]
        tests = [{"input": _test_text(i), "output": _test_text(o)} for i, o in pairs]
        return ("stdio", tests) if tests else None
    if "functional" in ground_truth:
        cases = ground_truth["functional"]
        cases = [cases] if isinstance(cases, str) else list(cases)
        tests = [{"input": str(case), "output": FUNCTIONAL_PASS_MARK} for case in cases[:max_tests]]
        return ("functional", tests) if tests else None
    return None


def _test_text(value: Any) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    user_turns = [turn["content"] for turn in prompt if turn.get("role") == "user"]
    return user_turns[-1] if user_turns else ""


@register("full", "code")
class CodeDomain(Domain):
    """KlearReasoner-CodeSub-15K problems; reward = fraction of the unit tests the program passes.

    Introduced in notebook ``00_toy_world`` (full-scale switch). Tests run in ``mdrl_lib.sandbox``
    (imported when scoring): stdin/stdout tests compare what the program prints; assert-based
    tests are judged in a process apart from the program's, so a program cannot fake a pass by
    printing or exiting. The program is the last ```python block of the answer. Rows whose tests
    are neither stdin/stdout nor assert-based are skipped; ground truths are parsed only for the
    rows drawn, since test files can be large. Scoring raises ``SandboxError`` on a machine where
    the sandbox cannot isolate programs.
    """

    name = "code"
    title = "Code"
    score_kind = "fractional"

    @classmethod
    def run_options(cls, data) -> dict:
        """``data_code_source`` when set."""
        return {"source": data.code_source} if data.code_source else {}

    def __init__(
        self,
        source: str = "Kwai-Klear/KlearReasoner-CodeSub-15K",
        split: str = "train",
        config: str | None = None,
        prompt_column: str | Sequence[str] = "prompt",
        ground_truth_column: str | Sequence[str] = "reward_model",
        max_tests: int = 16,
        timeout_s: float = 5.0,
        memory_mb: int = 256,
        max_prompt_tokens: int = PAPER_MAX_PROMPT_TOKENS,
        tokenizer: Any = None,
    ) -> None:
        self.source, self.split, self.config = check_source(source), split, config
        self.columns = {"prompt": prompt_column, "ground_truth": ground_truth_column}
        self.max_tests, self.timeout_s, self.memory_mb = max_tests, timeout_s, memory_mb
        self.max_prompt_tokens, self.tokenizer = max_prompt_tokens, tokenizer

    def build_splits(self, seed: int = 0, train_size: int = PAPER_TRAIN_SIZE, eval_size: int = PAPER_EVAL_SIZE) -> Splits:
        """Disjoint ``train_size`` and ``eval_size`` problems drawn with ``seed``."""
        table = load_table(self.source, self.split, self.config, self.columns)
        problems = [_prompt_text(prompt) for prompt in table["prompt"]]
        first_row = {}
        for index, problem in enumerate(problems):
            if problem.strip():
                first_row.setdefault(problem, index)
        drawn: list[dict] = []
        for index in _shuffled(sorted(first_row.values()), seed):
            ground_truth = table[index]["ground_truth"]
            if isinstance(ground_truth, dict) and "ground_truth" in ground_truth:
                ground_truth = ground_truth["ground_truth"]
            parsed = tests_from_ground_truth(ground_truth, self.max_tests)
            if parsed is not None:
                drawn.append({"problem": problems[index], "harness": parsed[0], "tests": parsed[1]})
            if len(drawn) == train_size + eval_size:
                break
        require_rows(f"code source {self.source}", len(drawn), {"train": train_size, "eval": eval_size})
        return Splits(
            train=[self._example(row) for row in drawn[:train_size]],
            eval=[self._example(row) for row in drawn[train_size:]],
        )

    def _example(self, row: dict) -> Example:
        body = truncate_to_tokens(row["problem"], self.max_prompt_tokens, self.tokenizer)
        return Example(
            domain=self.name,
            prompt=f"{body}\n\n{CODE_INSTRUCTION}",
            answer="",
            spec=_spec(harness=row["harness"], tests=row["tests"]),
        )

    def score_one(self, completion: str, spec: dict) -> float:
        program = extract_program(completion)
        if not program.strip():
            return 0.0
        from mdrl_lib.sandbox import fraction_passed, functional_fraction_passed

        limits = {"timeout_s": self.timeout_s, "memory_mb": self.memory_mb}
        if spec["harness"] == "functional":
            cases = [test["input"] for test in spec["tests"]]
            return float(functional_fraction_passed(program, cases, prelude=FUNCTIONAL_IMPORTS, **limits))
        return float(fraction_passed(program, spec["tests"], **limits))


# ----------------------------------------------------------------------------- QA


def format_choices(question: str, options: Sequence[str]) -> str:
    """``question`` followed by its options lettered A), B), ... and the answer instruction.

    Introduced in notebook ``00_toy_world`` (full-scale switch).
    """
    lines = "\n".join(f"{OPTION_LETTERS[i]}) {option}" for i, option in enumerate(options))
    return f"{question}\n\n{lines}\n\n{QA_INSTRUCTION}"


@register("full", "qa")
class QADomain(Domain):
    """SuperGPQA multiple choice, training subset stratified by subfield and difficulty; test sets
    of non-training SuperGPQA and MMLU-Pro. Reward 1 when the chosen letter is the answer, else 0.

    Introduced in notebook ``00_toy_world`` (full-scale switch). Validation and SuperGPQA test
    examples are drawn at random from the rows left after the training draw, so all three are
    disjoint.
    """

    name = "qa"
    title = "QA"

    @classmethod
    def run_options(cls, data) -> dict:
        """``data_qa_source`` when set."""
        return {"source": data.qa_source} if data.qa_source else {}

    def __init__(
        self,
        source: str = "m-a-p/SuperGPQA",
        split: str = "train",
        config: str | None = None,
        question_column: str | Sequence[str] = "question",
        options_column: str | Sequence[str] = "options",
        answer_column: str | Sequence[str] = "answer_letter",
        strata_columns: Sequence[str] = ("subfield", "difficulty"),
        test_source: str = "TIGER-Lab/MMLU-Pro",
        test_split: str = "test",
        test_config: str | None = None,
        test_question_column: str | Sequence[str] = "question",
        test_options_column: str | Sequence[str] = "options",
        test_answer_column: str | Sequence[str] = "answer",
        max_prompt_tokens: int = PAPER_MAX_PROMPT_TOKENS,
        tokenizer: Any = None,
    ) -> None:
        self.source, self.split, self.config = check_source(source), split, config
        self.strata_columns = tuple(strata_columns)
        self.columns = {
            "question": question_column,
            "options": options_column,
            "answer": answer_column,
            **{column: column for column in self.strata_columns},
        }
        self.test_source, self.test_split, self.test_config = check_source(test_source), test_split, test_config
        self.test_columns = {"question": test_question_column, "options": test_options_column, "answer": test_answer_column}
        self.max_prompt_tokens, self.tokenizer = max_prompt_tokens, tokenizer

    def build_splits(self, seed: int = 0, train_size: int = PAPER_TRAIN_SIZE, eval_size: int = PAPER_EVAL_SIZE) -> Splits:
        """A stratified ``train_size`` draw and ``eval_size`` held-out examples, by ``seed``."""
        train, eval_rows, _ = self._partition(seed, train_size, eval_size, test_size=0)
        return Splits(train=[self._example(r) for r in train], eval=[self._example(r) for r in eval_rows])

    def build_test_sets(
        self,
        seed: int = 0,
        train_size: int = PAPER_TRAIN_SIZE,
        eval_size: int = PAPER_EVAL_SIZE,
        supergpqa_size: int = SUPERGPQA_TEST_SIZE,
        mmlu_pro_size: int = MMLU_PRO_TEST_SIZE,
    ) -> dict[str, list[Example]]:
        """Test examples ``{"supergpqa": [...], "mmlu_pro": [...]}``; the SuperGPQA ones avoid the
        training and validation examples that ``build_splits`` with the same arguments returns."""
        _, _, supergpqa = self._partition(seed, train_size, eval_size, test_size=supergpqa_size)
        mmlu_rows = self._rows(self.test_source, self.test_split, self.test_config, self.test_columns)
        require_rows(f"QA test source {self.test_source}", len(mmlu_rows), {"test": mmlu_pro_size})
        return {
            "supergpqa": [self._example(row) for row in supergpqa],
            "mmlu_pro": [self._example(row) for row in _shuffled(mmlu_rows, seed)[:mmlu_pro_size]],
        }

    def _partition(self, seed: int, train_size: int, eval_size: int, test_size: int) -> tuple[list, list, list]:
        rows = self._rows(self.source, self.split, self.config, self.columns)
        sizes = {"train": train_size, "eval": eval_size, "test": test_size}
        require_rows(f"QA source {self.source}", len(rows), {k: v for k, v in sizes.items() if v})
        train = stratified_sample(rows, self.strata_columns, train_size, seed)
        chosen = {row["question"] for row in train}
        rest = _shuffled([row for row in rows if row["question"] not in chosen], seed)
        return train, rest[:eval_size], rest[eval_size : eval_size + test_size]

    def _rows(self, source: str, split: str, config: str | None, columns: Columns) -> list[dict]:
        rows = []
        for row in load_rows(source, split, config, columns):
            options = [str(option) for option in row["options"]]
            answer = str(row["answer"]).strip().upper()
            if answer not in list(OPTION_LETTERS[: len(options)]):
                raise ValueError(f"{source}: answer {row['answer']!r} is not one of the {len(options)} option letters")
            rows.append({**row, "question": str(row["question"]), "options": options, "answer": answer})
        return unique_by(rows, "question")

    def _example(self, row: dict) -> Example:
        question = truncate_to_tokens(row["question"], self.max_prompt_tokens, self.tokenizer)
        return Example(
            domain=self.name,
            prompt=format_choices(question, row["options"]),
            answer=row["answer"],
            spec=_spec(answer=row["answer"], n_options=len(row["options"])),
        )

    def score_one(self, completion: str, spec: dict) -> float:
        return 1.0 if extract_choice_letter(completion, spec["n_options"]) == spec["answer"] else 0.0


# ----------------------------------------------------------------------------- creative writing


class ReferenceScorer(Protocol):
    """The CW reward: a score in [0, 1] for a completion given the reference answer and the prompt.

    Introduced in notebook ``00_toy_world`` (full-scale switch). This is the hook for a judge model
    or reward model: any callable with this signature can be passed as ``CWDomain(scorer=...)``.
    """

    def __call__(self, completion: str, reference: str, prompt: str) -> float: ...


_WORD = re.compile(r"\w+")


class OverlapF1Scorer:
    """The default CW scorer, a dependency-free stand-in: mean F1 of word n-gram overlap.

    Introduced in notebook ``00_toy_world`` (full-scale switch). For each order in ``orders`` it
    counts the lower-cased word n-grams the completion shares with the reference (with
    multiplicity) and takes the F1 of precision and recall; the score is the mean over orders. It
    rewards closeness to the reference, not quality; the paper's judge is not published, so plug a
    judge or reward model in through ``ReferenceScorer`` for anything beyond a smoke test.
    """

    def __init__(self, orders: Sequence[int] = (1, 2)) -> None:
        self.orders = tuple(orders)

    def __call__(self, completion: str, reference: str, prompt: str) -> float:
        predicted = _WORD.findall(final_response(completion).lower())
        gold = _WORD.findall(reference.lower())
        return sum(_ngram_f1(predicted, gold, n) for n in self.orders) / len(self.orders)


def _ngram_f1(predicted: list[str], gold: list[str], n: int) -> float:
    predicted_counts = Counter(zip(*(predicted[i:] for i in range(n))))
    gold_counts = Counter(zip(*(gold[i:] for i in range(n))))
    shared = sum((predicted_counts & gold_counts).values())
    if shared == 0:
        return 0.0
    precision, recall = shared / sum(predicted_counts.values()), shared / sum(gold_counts.values())
    return 2 * precision * recall / (precision + recall)


@register("full", "cw")
class CWDomain(Domain):
    """The crownelius Creative-Writing series, concatenated; reward from a reference-based scorer.

    Introduced in notebook ``00_toy_world`` (full-scale switch). ``sources`` is one source or a
    list; rows of all of them form one pool (repeated instructions dropped). The reference is the
    dataset's response (its text after any ``</think>``); the paper resampled 2,560 references with
    Qwen3-235B-A22B-Instruct-2507, which a local file with a ``response`` column can supply.
    """

    name = "cw"
    title = "CW"
    score_kind = "fractional"

    @classmethod
    def run_options(cls, data) -> dict:
        """``data_cw_source`` when set: one source or several joined by commas."""
        return {"sources": tuple(s.strip() for s in data.cw_source.split(",") if s.strip())} if data.cw_source else {}

    def __init__(
        self,
        sources: str | Sequence[str] = CW_SOURCES,
        split: str = "train",
        config: str | None = None,
        prompt_column: str | Sequence[str] = ("instruction", "prompt"),
        reference_column: str | Sequence[str] = ("response", "output"),
        scorer: ReferenceScorer | None = None,
        max_prompt_tokens: int = PAPER_MAX_PROMPT_TOKENS,
        tokenizer: Any = None,
    ) -> None:
        self.sources = tuple(check_source(s) for s in ([sources] if isinstance(sources, str) else sources))
        self.split, self.config = split, config
        self.columns = {"prompt": prompt_column, "reference": reference_column}
        self.scorer: ReferenceScorer = scorer if scorer is not None else OverlapF1Scorer()
        self.max_prompt_tokens, self.tokenizer = max_prompt_tokens, tokenizer

    def build_splits(self, seed: int = 0, train_size: int = PAPER_TRAIN_SIZE, eval_size: int = PAPER_EVAL_SIZE) -> Splits:
        """Disjoint ``train_size`` and ``eval_size`` writing prompts drawn with ``seed``."""
        rows = [
            {"prompt": str(row["prompt"]), "reference": final_response(str(row["reference"])).strip()}
            for source in self.sources
            for row in load_rows(source, self.split, self.config, self.columns)
        ]
        rows = unique_by([row for row in rows if row["prompt"].strip() and row["reference"]], "prompt")
        require_rows(f"CW sources {', '.join(self.sources)}", len(rows), {"train": train_size, "eval": eval_size})
        rows = _shuffled(rows, seed)
        return Splits(
            train=[self._example(row) for row in rows[:train_size]],
            eval=[self._example(row) for row in rows[train_size : train_size + eval_size]],
        )

    def _example(self, row: dict) -> Example:
        prompt = truncate_to_tokens(row["prompt"], self.max_prompt_tokens, self.tokenizer)
        return Example(domain=self.name, prompt=prompt, answer=row["reference"], spec=_spec(reference=row["reference"], prompt=prompt))

    def score_one(self, completion: str, spec: dict) -> float:
        return min(1.0, max(0.0, float(self.scorer(completion, spec["reference"], spec["prompt"]))))

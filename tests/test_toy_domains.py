"""The toy world's four domains (mdrl_lib.domains): verifiers on hand-made completions, splits,
determinism, the shared alphabet and the registry's errors."""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import re
import subprocess
import sys
import warnings
from collections import Counter

import pytest

from mdrl_lib.domains.base import DOMAIN_NAMES, Domain, Splits, get_domain
from mdrl_lib.domains.toy import ALPHABET, boxed, first_line, prompt, spec, styled, take_split, with_boxed_answers
from mdrl_lib.domains import code as toy_code
from mdrl_lib.domains import math as toy_math
from mdrl_lib.domains import qa as toy_qa
from mdrl_lib.domains import writing as toy_cw

TOTALS = {"math": 3775, "code": 613, "qa": 300, "cw": 810}
# QA splits by creature (3 questions each): multiples of 3 keep its split sizes exact
SMALL = {"math": (40, 30), "code": (20, 15), "qa": (24, 21), "cw": (30, 20)}


def score_both_ways(domain: Domain, completions: list[str], specs: list[str]) -> list[float]:
    """Scores via ``domain.score`` and via the trl-style reward function; they must agree."""
    direct = domain.score(completions, specs)
    reward = domain.reward_function()
    via_trl = reward(prompts=["p"] * len(completions), completions=completions,
                     completion_ids=[[0]] * len(completions), spec=list(specs), extra_column=[1] * len(specs))
    assert via_trl == direct
    assert all(isinstance(s, float) and 0.0 <= s <= 1.0 for s in direct)
    return direct


def splits_digest(domain: Domain, seed: int, sizes: tuple[int, int]) -> str:
    s = domain.build_splits(seed, *sizes)
    blob = json.dumps([[e.__dict__ for e in part] for part in (s.train, s.eval, s.warmup)], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


# ----------------------------------------------------------------------------- shared pieces


def test_prompt_spec_and_first_line():
    assert prompt("m", "3+4") == "m:3+4="
    assert spec(b=1, a="x") == '{"a":"x","b":1}'
    assert first_line("  17 \nmore text\n") == "17"
    assert first_line("") == ""
    assert first_line("\n17") == ""


def test_take_split_cuts_eval_then_train_then_warmup_without_loss():
    items = list(range(20))
    train, held_out, pool = take_split(items, 0, "x", 5, 3)
    assert (len(train), len(held_out), len(pool)) == (5, 3, 12)
    assert sorted(train + held_out + pool) == items
    assert take_split(items, 0, "x", 5, 3) == (train, held_out, pool)


# ----------------------------------------------------------------------------- registry


def test_get_domain_returns_each_toy_domain():
    for name in DOMAIN_NAMES:
        domain = get_domain(name, "toy")
        assert isinstance(domain, Domain) and domain.name == name


def test_get_domain_unknown_domain_names_the_valid_choices():
    with pytest.raises(ValueError) as info:
        get_domain("poetry")
    message = str(info.value)
    assert "poetry" in message
    for name in DOMAIN_NAMES:
        assert name in message


def test_get_domain_unknown_scale_names_the_valid_choices():
    with pytest.raises(ValueError) as info:
        get_domain("math", "huge")
    message = str(info.value)
    assert "huge" in message and "toy" in message and "full" in message


def test_reward_function_is_named_after_the_domain():
    for name in DOMAIN_NAMES:
        assert get_domain(name).reward_function().__name__ == f"{name}_reward"


def test_score_rejects_mismatched_lengths_and_accepts_empty_batches():
    for name in DOMAIN_NAMES:
        domain = get_domain(name)
        with pytest.raises(ValueError, match="2 completions but 1 specs"):
            domain.score(["a", "b"], ['{"answer":"1"}'])
        assert domain.score([], []) == []


def test_reward_function_accepts_conversational_completions():
    domain = get_domain("math")
    reward = domain.reward_function()
    completions = [[{"role": "assistant", "content": "7"}], [{"role": "assistant", "content": "8"}]]
    assert reward(prompts=["m:3+4="] * 2, completions=completions, completion_ids=[[0], [0]],
                  spec=[spec(answer="7")] * 2) == [1.0, 0.0]


# ----------------------------------------------------------------------------- Math


MATH_CASES = [
    ("7", 1.0),            # right
    (" 7 ", 1.0),          # surrounding spaces are stripped
    ("7\n8 and more", 1.0),  # only the first line is the answer; text after the newline is ignored
    ("8", 0.0),            # wrong
    ("", 0.0),             # empty
    ("\n7", 0.0),          # empty first line
    ("zq?(", 0.0),         # garbage
    ("7 8", 0.0),          # trailing text on the answer line
    ("7.0", 0.0), ("07", 0.0), ("+7", 0.0), ("m:3+4=7", 0.0),  # exact match only
]


@pytest.mark.parametrize("completion,expected", MATH_CASES)
def test_math_reward(completion, expected):
    domain = get_domain("math")
    assert score_both_ways(domain, [completion], [spec(answer="7")]) == [expected]


def test_math_warmup_writes_the_boxed_share_of_answers_boxed():
    domain = get_domain("math")
    splits = domain.build_splits(0, *domain.default_sizes)
    pairs = domain.warmup_pairs(splits)
    assert [p for p, _ in pairs] == [e.prompt for e in splits.warmup]
    is_boxed = [a == boxed(e.answer) for (_, a), e in zip(pairs, splits.warmup)]
    assert all(b or a == e.answer for b, (_, a), e in zip(is_boxed, pairs, splits.warmup))
    assert abs(sum(is_boxed) / len(is_boxed) - toy_math.BOXED_SHARE) < 0.03  # 2,275 draws: sd about 0.01
    assert domain.warmup_pairs(splits) == pairs  # the same pairs get the same styles
    first = splits.warmup[:20]
    assert domain.score([boxed(e.answer) for e in first], [e.spec for e in first]) == [0.0] * 20


def test_with_boxed_answers_extremes_and_bad_share():
    pairs = [("m:1+1=", "2"), ("m:2+2=", "4")]
    assert with_boxed_answers(pairs, "x", 0.0) == pairs
    assert with_boxed_answers(pairs, "x", 1.0) == [("m:1+1=", "(2)"), ("m:2+2=", "(4)")]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        with_boxed_answers(pairs, "x", 1.5)


def test_styled_draws_the_share_per_key():
    keys = [f"m:{i}+1=" for i in range(4000)]
    draws = styled(keys, "x", 0.25)
    assert len(draws) == 4000 and abs(sum(draws) / 4000 - 0.25) < 0.03  # sd about 0.007
    assert styled(keys, "x", 0.25) == draws and styled(keys, "y", 0.25) != draws
    assert styled(keys[::-1], "x", 0.25) == draws[::-1]  # a key keeps its style wherever it stands
    assert styled(keys[:5], "x", 0.0) == [False] * 5 and styled(keys[:5], "x", 1.0) == [True] * 5
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        styled(keys[:5], "x", -0.1)


def test_qa_unit_styles_change_with_the_seed():
    domain = get_domain("qa")
    shares = []
    for seed in range(4):
        splits = domain.build_splits(seed, 99, 99)
        styles = dict(domain.warmup_pairs(splits))
        shares.append(sum(styles[e.prompt] == e.answer for e in splits.eval))
    assert len(set(shares)) > 1  # the held-out facts written with units differ from seed to seed


def test_math_examples_are_hand_checkable():
    domain = get_domain("math")
    example = domain._example(12, "-", 5)
    assert (example.prompt, example.answer, example.spec_dict) == ("m:12-5=", "7", {"answer": "7"})
    problems = toy_math.all_problems()
    assert len(problems) == len(set(problems)) == 51 * 50 // 2 + 50 * 50 == 3775
    assert all(a - b >= 0 for a, op, b in problems if op == "-")


# ----------------------------------------------------------------------------- Code


CODE_SPEC = spec(target=17, digit="3")
CODE_CASES = [
    ("3*5+2", 1.0),              # right value, uses the digit
    ("3 * 5 + 2", 1.0),          # spaces allowed
    ("(3*5)+2", 1.0),
    ("  3*5+2  \ntrailing", 1.0),  # first line only
    ("2*9-1", 0.5),              # right value, no digit 3
    ("3", 0.5),                  # digit, wrong value
    ("3*3", 0.5),
    ("1+1", 0.0),                # neither
    ("17", 0.0),                 # multi-digit literals are outside the grammar
    ("13+4", 0.0),               # right value and digit, but a two-digit literal
    ("", 0.0),                   # empty
    ("\n3*5+2", 0.0),            # empty first line
    ("3*5+2 xyz", 0.0),          # trailing text on the program line
    ("zq?(", 0.0),               # garbage
    ("3*(5", 0.0),               # syntax error
    ("()", 0.0),                 # parses to a tuple; no digit, not the value
    ("3*5+2)", 0.0),
    ("__import__('os').system('x')", 0.0),  # hostile: names and calls
    ("9**9**9", 0.0),            # hostile: power tower
    ("3**3", 0.0),               # power is refused even when small
    ("1+1+1+1+1+1+1+1+1+1+1+1+1+1+3", 0.0),  # right value and digit, but longer than 15 chars
]


@pytest.mark.parametrize("completion,expected", CODE_CASES)
def test_code_reward(completion, expected):
    domain = get_domain("code")
    assert score_both_ways(domain, [completion], [CODE_SPEC]) == [expected]


def test_code_program_at_the_length_limit_still_runs():
    program = "1+1+1+1+1+1+1+3"  # 15 characters, value 10
    assert len(program) == toy_code.MAX_PROGRAM_CHARS
    assert get_domain("code").score([program], [spec(target=10, digit="3")]) == [1.0]


def test_code_scores_a_mixed_batch_in_order():
    domain = get_domain("code")
    completions = ["3*5+2", "9-9", "2*4", "4*4+1", "__import__('os').system('x')", "8"]
    specs = [CODE_SPEC, spec(target=0, digit="9"), spec(target=9, digit="2"), spec(target=17, digit="3"),
             spec(target=1, digit="1"), spec(target=8, digit="5")]
    assert score_both_ways(domain, completions, specs) == [1.0, 1.0, 0.5, 0.5, 0.0, 0.5]


def test_code_scores_a_large_batch():
    # e.g. mixed_group_share over every Code prompt with 8 samples: 613 * 8 = 4,904 completions
    domain = get_domain("code")
    completions = ["3*5+2", "2*9-1", "3", "9**9**9"] * 1250
    assert domain.score(completions, [CODE_SPEC] * len(completions)) == [1.0, 0.5, 0.5, 0.0] * 1250


def test_code_tests_passed_is_the_fraction_of_two_tests():
    assert toy_code.tests_passed(True, True, True) == 1.0
    assert toy_code.tests_passed(True, True, False) == 0.5
    assert toy_code.tests_passed(True, False, True) == 0.5
    assert toy_code.tests_passed(True, False, False) == 0.0
    assert toy_code.tests_passed(False, True, True) == 0.0


# The toy Code harness as it ran in the sandbox before programs were evaluated with ast (kept
# here as the reference the new evaluator must match, result for result).
OLD_GRAMMAR = re.compile(r"^[0-9+\-*() ]{1,%d}$" % 15)


def old_harness(program: str, target: int, digit: str) -> list[bool]:
    value = None
    if OLD_GRAMMAR.match(program) and "**" not in program and not re.search(r"[0-9][0-9]", program):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                value = eval(compile(program, "<program>", "eval"), {"__builtins__": {}}, {})
        except Exception:
            value = None
    return [value is not None, value == target, digit in program]


TRICKY_PROGRAMS = [
    "", " ", "\n", "3\n", "3+4\n", "3\n4", " 3", "3 ", "\t3", "0", "00", "-0", "07", "3*5+2", "(3*5)+2",
    "()", "(())", "( )", "()*3", "3*()", "()*-3", "-()", "+()", "()+()", "()-()", "()*()", "()*0", "(()*9)*9",
    "3()", "()()", "(3)(4)", "--3", "+-+3", "3 -- 3", "3- -3", "1 2", "12", "1*2*3*4*5*6*7*8", "9*9*9*9*9*9*9*9",
    "9**9", "9* *9", "9*-*9", "(3", "3)", "*3", "3*", "3-", "(*3)", "(3,)", "3,4", "3.0", "3j", "1e3", "0x3",
    "\u0663", "\uff13", "3\u00a0+1", "((((((((((((3)))", "((((((((((((((3", "1+1+1+1+1+1+1+3", "1+1+1+1+1+1+1+3+",
    "1+1+1+1+1+1+1+13", "8-9-9-9-9-9-9-9", "-(-(-(-(-(-3)))))", "(-3)*(-3)*(-3)", "__import__('os')", "3;4",
    "3 if 1 else 2", "not 3", "~3", "3@3", "3%3", "3/3", "3//3", "3<<3", "3==3", "(3)==(3)", "[3]", "{3}",
]


def generated_programs() -> list[str]:
    """Every string of up to 5 characters over a grammar alphabet, random strings over the full
    grammar with stray characters, and the tricky cases above."""
    programs = list(TRICKY_PROGRAMS)
    small = "019+-*() "
    for length in range(6):
        programs += ["".join(chars) for chars in itertools.product(small, repeat=length)]
    rng = random.Random(20260521)
    full = "0123456789+-*() " * 4 + "/.,a_\n\t~@%j[]=\u0663"
    for _ in range(20000):
        programs.append("".join(rng.choice(full) for _ in range(rng.randint(1, 17))))
    return programs


def test_code_evaluator_matches_the_old_harness_on_every_generated_program():
    programs = generated_programs()
    assert len(programs) == len(TRICKY_PROGRAMS) + sum(9**n for n in range(6)) + 20000
    mismatches = []
    for i, program in enumerate(programs):
        target, digit = i % 91, "123456789"[i % 9]
        expected = old_harness(program, target, digit)
        got = list(toy_code.check_program(program, target, digit))
        if got != expected:
            mismatches.append((program, got, expected))
    assert mismatches == []
    # the generated set reaches every kind of outcome, not only grammar refusals
    outcomes = Counter(tuple(old_harness(p, eval_or(p), "3")) for p in TRICKY_PROGRAMS)
    assert outcomes[(True, True, True)] and outcomes[(True, True, False)] and outcomes[(False, False, False)]
    assert toy_code.evaluate("()*3") == () and toy_code.check_program("()*3", 0, "3") == (True, False, True)


def eval_or(program: str) -> int:
    """The value of `program` when it is an int in the grammar, else -1 (to build matching targets)."""
    value = toy_code.evaluate(program)
    return value if isinstance(value, int) else -1


def test_code_scores_equal_the_old_harness_through_the_domain():
    domain = get_domain("code")
    rng = random.Random(7)
    completions = [rng.choice(TRICKY_PROGRAMS) + rng.choice(["", "\nmore", " x"]) for _ in range(300)]
    specs = [spec(target=rng.randint(0, 90), digit=rng.choice("123456789")) for _ in completions]
    expected = []
    for completion, s in zip(completions, specs):
        program = toy_code.first_line(completion)[: toy_code.MAX_PROGRAM_CHARS + 1]
        parsed = json.loads(s)
        expected.append(toy_code.tests_passed(*old_harness(program, parsed["target"], parsed["digit"])))
    assert domain.score(completions, specs) == expected


def test_code_scoring_starts_no_process(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the toy Code verifier started a process")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    monkeypatch.setattr(os, "fork", refuse)
    monkeypatch.setattr(os, "system", refuse)
    assert get_domain("code").score(["3*5+2", "__import__('os').system('x')"], [CODE_SPEC] * 2) == [1.0, 0.0]


def test_code_tasks_have_solutions_that_meet_their_spec():
    tasks = toy_code.all_tasks()
    assert len(tasks) == 613
    for target, digit, solutions in tasks:
        assert 0 <= target <= toy_code.TARGET_MAX and digit in "123456789"
        for program in solutions[:3]:
            assert eval(program) == target and digit in program and len(program) <= toy_code.MAX_PROGRAM_CHARS


# ----------------------------------------------------------------------------- QA


QA_CASES = [("17 years", 1.0), (" 17 years", 1.0), ("17 years\nbax legs?=4 legs", 1.0), ("17", 0.0),
            ("16 years", 0.0), ("", 0.0), ("017 years", 0.0), ("17 year", 0.0), ("17years", 0.0),
            ("17 years old", 0.0), ("(17)", 0.0), ("17 legs", 0.0), ("seventeen years", 0.0), ("??::", 0.0)]


@pytest.mark.parametrize("completion,expected", QA_CASES)
def test_qa_reward(completion, expected):
    domain = get_domain("qa")
    assert score_both_ways(domain, [completion], [spec(answer="17 years", number="17")]) == [expected]


def test_qa_answers_carry_the_unit_of_their_attribute():
    splits = get_domain("qa").build_splits(0, 24, 21)
    for example in splits.train + splits.eval:
        attribute = example.prompt.split()[1].rstrip("?=")
        number = example.spec_dict["number"]
        assert example.answer == example.spec_dict["answer"] == f"{number} {toy_qa.UNITS[attribute]}"
    assert toy_qa.with_unit(4, "legs") == "4 legs" and toy_qa.with_unit(0, "kids") == "0 kids"


def test_qa_fact_table_is_seeded_and_in_range():
    table = toy_qa.fact_table(0)
    assert table == toy_qa.fact_table(0) and table != toy_qa.fact_table(1)
    assert len(table) == toy_qa.NUM_CREATURES
    for name, attrs in table.items():
        assert len(name) == 3 and set(attrs) == set(toy_qa.ATTRIBUTES)
        for attribute, value in attrs.items():
            lo, hi = toy_qa.ATTRIBUTES[attribute]
            assert lo <= value <= hi


def test_qa_warmup_asks_every_fact_with_the_unit_share_of_units():
    domain = get_domain("qa")
    splits = domain.build_splits(3, 60, 40)
    pairs = domain.warmup_pairs(splits)
    table = toy_qa.fact_table(3)
    assert sorted(p for p, _ in pairs) == sorted(f"q:{n} {a}?=" for n, attrs in table.items() for a in attrs)
    with_units = 0
    for prompt_text, answer in pairs:
        name, attribute = prompt_text[2:-2].split()
        value = table[name][attribute.rstrip("?")]
        assert answer in (str(value), toy_qa.with_unit(value, attribute.rstrip("?")))
        with_units += answer != str(value)
    assert abs(with_units / len(pairs) - toy_qa.UNIT_SHARE) < 0.09  # 300 draws: sd about 0.03
    assert domain.warmup_pairs(splits) == pairs  # the same facts get the same styles
    assert {e.prompt for e in splits.train + splits.eval} <= {p for p, _ in pairs}  # the base has read them


def test_qa_splits_keep_each_creature_on_one_side():
    domain = get_domain("qa")
    splits = domain.build_splits(4, 25, 20)  # 9 and 7 creatures; their first 25 and 20 facts are asked
    assert (len(splits.train), len(splits.eval)) == (25, 20)
    creatures = [{e.prompt[2:5] for e in part} for part in (splits.train, splits.eval, splits.warmup)]
    assert [len(c) for c in creatures] == [9, 7, toy_qa.NUM_CREATURES - 16]
    assert not creatures[0] & creatures[1] and not creatures[0] & creatures[2] and not creatures[1] & creatures[2]
    assert len(splits.warmup) == 3 * (toy_qa.NUM_CREATURES - 16) and len(splits.unused) == 2 + 1
    assert {e.prompt[2:5] for e in splits.unused} <= creatures[0] | creatures[1]


def test_default_warmup_pairs_are_the_warmup_pool():
    for name in ("code",):  # CW's count down in part: see test_cw_warmup_counts_down_for_its_share_of_verses
        domain = get_domain(name)
        splits = domain.build_splits(0, *SMALL[name])
        assert domain.warmup_pairs(splits) == [(e.prompt, e.answer) for e in splits.warmup]


# ----------------------------------------------------------------------------- Creative Writing


CW_SPEC = spec(letters="bg", length=12)
CW_CASES = [
    ("2 bat 17 gem", 5),     # every check
    ("2 bat 17 gem\nmore", 5),  # first line only
    (" 2 bat 17 gem ", 5),
    ("2 bat 7 gem", 4),      # length off
    ("17 bat 2 gem", 4),     # descending
    ("2 gem 17 bat", 4),     # letters in the wrong order
    ("2 bxx 17 gxx", 4),     # not lexicon words (letters still right)
    ("9 bat 7 gem", 3),      # descending, length off
    ("9 gem 7 bat", 2),      # + letters wrong
    ("9 gxx 7 bxx", 1),      # + not lexicon words: only the form holds
    ("", 0),                 # empty
    ("bat gem", 0),          # no numbers
    ("2 bat 17", 0),         # dangling number
    ("2 bat 17 gem 20 hat", 0),  # three pairs for two letters
    ("2  bat 17 gem", 0),    # double space
    ("2 Bat 17 gem", 0),     # outside the alphabet
    ("200 bat 17 gem", 0),   # numbers have one or two digits
    ("2 bat, 17 gem", 0),
    ("\n2 bat 17 gem", 0),
]


@pytest.mark.parametrize("completion,checks_met", CW_CASES)
def test_cw_reward_is_the_fraction_of_rubric_checks_met(completion, checks_met):
    domain = get_domain("cw")
    assert score_both_ways(domain, [completion], [CW_SPEC]) == [checks_met / 5]


def test_cw_rubric_names_the_checks():
    assert toy_cw.rubric("2 bat 7 gem", "bg", 12) == {
        "form": True, "lexicon": True, "letters": True, "ascending": True, "length": False}
    assert toy_cw.rubric("2 bat", "bg", 5) == dict.fromkeys(toy_cw.RUBRIC, False)


def test_cw_three_letter_prompt():
    domain = get_domain("cw")
    verse = "1 mop 6 top 23 gem"
    assert domain.score([verse, "1 mop 6 top"], [spec(letters="mtg", length=len(verse))] * 2) == [1.0, 0.0]


# ----------------------------------------------------------------------------- every domain


@pytest.mark.parametrize("name", DOMAIN_NAMES)
def test_random_garbage_scores_stay_in_unit_interval(name):
    domain = get_domain(name)
    rng = random.Random(0)
    examples = domain.build_splits(0, *SMALL[name]).train
    completions = ["".join(rng.choice(ALPHABET + "\n") for _ in range(rng.randint(0, 30))) for _ in range(60)]
    specs = [examples[i % len(examples)].spec for i in range(len(completions))]
    scores = score_both_ways(domain, completions, specs)
    assert len(scores) == len(completions)


@pytest.mark.parametrize("name", DOMAIN_NAMES)
def test_every_reference_answer_scores_one(name):
    domain = get_domain(name)
    total = TOTALS[name]
    size = total // 9 * 3  # a third of the prompts, a multiple of 3 (QA splits by creature)
    splits = domain.build_splits(0, size, size)
    examples = splits.train + splits.eval + splits.warmup
    assert len(examples) == total
    assert domain.score([e.answer for e in examples], [e.spec for e in examples]) == [1.0] * total


def test_code_references_evaluate_to_the_target_and_use_the_digit():
    domain = get_domain("code")
    splits = domain.build_splits(0, 100, 100)
    for e in splits.train + splits.eval + splits.warmup:
        spec_ = e.spec_dict
        assert eval(e.answer) == spec_["target"] and spec_["digit"] in e.answer
        assert e.prompt == f"c:{spec_['target']},{spec_['digit']}="


@pytest.mark.parametrize("name", DOMAIN_NAMES)
def test_prompts_and_answers_use_only_the_alphabet(name):
    domain = get_domain(name)
    splits = domain.build_splits(0, *SMALL[name])
    texts = [t for e in splits.train + splits.eval + splits.warmup for t in (e.prompt, e.answer)]
    texts += [t for pair in domain.warmup_pairs(splits) for t in pair]
    allowed = set(ALPHABET)
    for text in texts:
        assert text and set(text) <= allowed, text


@pytest.mark.parametrize("name", DOMAIN_NAMES)
def test_prompts_have_the_shared_format(name):
    tag = {"math": "m", "code": "c", "qa": "q", "cw": "w"}[name]
    splits = get_domain(name).build_splits(0, *SMALL[name])
    for e in splits.train + splits.eval + splits.warmup:
        assert e.domain == name and e.prompt.startswith(f"{tag}:") and e.prompt.endswith("=")


@pytest.mark.parametrize("name", DOMAIN_NAMES)
def test_splits_are_disjoint_sized_and_cover_every_prompt(name):
    domain = get_domain(name)
    train_size, eval_size = SMALL[name]
    splits = domain.build_splits(5, train_size, eval_size)
    assert isinstance(splits, Splits)
    train, held_out, pool = ({e.prompt for e in part} for part in (splits.train, splits.eval, splits.warmup))
    assert (len(splits.train), len(splits.eval)) == (train_size, eval_size)
    assert len(splits.warmup) == TOTALS[name] - train_size - eval_size
    assert (len(train), len(held_out), len(pool)) == (len(splits.train), len(splits.eval), len(splits.warmup))
    assert not train & held_out and not train & pool and not held_out & pool
    assert len(train | held_out | pool) == TOTALS[name]


@pytest.mark.parametrize("name", DOMAIN_NAMES)
def test_splits_are_deterministic_by_seed(name):
    domain = get_domain(name)
    sizes = SMALL[name]
    assert splits_digest(domain, 0, sizes) == splits_digest(get_domain(name), 0, sizes)
    assert splits_digest(domain, 0, sizes) != splits_digest(domain, 1, sizes)
    first, other = domain.build_splits(0, *sizes), domain.build_splits(1, *sizes)
    assert [e.prompt for e in first.train] != [e.prompt for e in other.train]
    assert [e.prompt for e in first.eval] != [e.prompt for e in other.eval]


def test_splits_are_identical_in_a_fresh_process_with_another_hash_seed():
    script = (
        "import hashlib, json\n"
        "from mdrl_lib.domains.base import get_domain\n"
        f"sizes = {SMALL!r}\n"
        "out = {}\n"
        "for name, size in sorted(sizes.items()):\n"
        "    s = get_domain(name).build_splits(0, *size)\n"
        "    blob = json.dumps([[e.__dict__ for e in p] for p in (s.train, s.eval, s.warmup)], sort_keys=True)\n"
        "    out[name] = hashlib.sha256(blob.encode()).hexdigest()\n"
        "print(json.dumps(out))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert result.returncode == 0, result.stderr
    expected = {name: splits_digest(get_domain(name), 0, size) for name, size in sorted(SMALL.items())}
    assert json.loads(result.stdout) == expected


@pytest.mark.parametrize("name", DOMAIN_NAMES)
def test_too_large_sizes_raise_an_error_naming_the_counts(name):
    domain = get_domain(name)
    total = TOTALS[name]
    train_size, eval_size = total - 10, 10
    with pytest.raises(ValueError) as info:
        domain.build_splits(0, train_size, eval_size)
    message = str(info.value)
    assert str(train_size) in message and str(eval_size) in message and str(total) in message
    with pytest.raises(ValueError):
        domain.build_splits(0, total + 5, 0)
    if name == "qa":  # split by creature: one creature (3 facts) left for warm-up is allowed
        assert len(domain.build_splits(0, total - 12, 9).warmup) == 3
        return
    splits = domain.build_splits(0, total - 11, 10)  # one prompt left for warm-up is allowed
    assert len(splits.warmup) == 1


@pytest.mark.parametrize("name", DOMAIN_NAMES)
def test_default_sizes_fit_the_toy_domain(name):
    domain = get_domain(name)
    splits = domain.build_splits(0, *domain.default_sizes)
    assert (len(splits.train), len(splits.eval)) == domain.default_sizes and splits.warmup


def test_kit_splits_honour_configured_and_default_sizes(tmp_path):
    from mdrl_lib.config import RunConfig
    from mdrl_lib.kit import Kit

    kit = Kit(RunConfig.from_params(run_dir=str(tmp_path / "a"), seed=2, data_train_size=12, data_eval_size=7))
    for name in DOMAIN_NAMES:
        splits = kit.splits(name)
        assert (len(splits.train), len(splits.eval)) == (12, 7)
        assert splits == get_domain(name).build_splits(2, 12, 7)
    default = Kit(RunConfig.from_params(run_dir=str(tmp_path / "b")))
    for name in DOMAIN_NAMES:
        splits = default.splits(name)
        assert (len(splits.train), len(splits.eval)) == get_domain(name).default_sizes
    assert set(default.evals) == set(DOMAIN_NAMES)
    assert default.evals["qa"][1] == default.splits("qa").eval


def test_details_say_what_the_verifier_read_in_hand_written_completions():
    """Per-item results (notebook 04's error breakdown reads them): the right content in the wrong
    convention is told apart from wrong content and from no answer, in every toy domain."""
    import json

    from mdrl_lib.domains.base import get_domain

    math_spec = json.dumps({"answer": "42"})
    read = get_domain("math").details(["42", "(42)", "42 years", "41", "", "(42"], [math_spec] * 6)
    assert [(r["number"], r["right_number"], r["boxed"], r["trailing"]) for r in read] == [
        ("42", True, False, False), ("42", True, True, False), ("42", True, False, True),
        ("41", False, False, False), (None, False, False, False), (None, False, False, False)]
    qa_spec = json.dumps({"answer": "17 years", "number": "17"})
    read = get_domain("qa").details(["17 years", "17", "18 years", "17 legs", "x"], [qa_spec] * 5)
    assert [(r["right_number"], r["right_unit"]) for r in read] == [(True, True), (True, False), (False, True),
                                                                    (True, False), (False, False)]
    code_spec = json.dumps({"target": 17, "digit": "3"})
    read = get_domain("code").details(["3*5+2", "9+8", "3+3", "import os"], [code_spec] * 4)
    assert [(r["parses"], r["right_value"], r["uses_digit"]) for r in read] == [
        (True, True, True), (True, True, False), (True, False, True), (False, False, False)]
    cw_spec = json.dumps({"letters": "bg", "length": 12})
    read = get_domain("cw").details(["2 bat 17 gem", "17 bat 2 gem", "bat gem"], [cw_spec] * 3)
    assert read[0] == dict.fromkeys(("form", "lexicon", "letters", "ascending", "length"), True)
    assert read[1]["form"] and not read[1]["ascending"] and read[1]["length"]
    assert not any(read[2].values())
    with pytest.raises(ValueError, match="2 completions but 1 specs"):
        get_domain("math").details(["1", "2"], [math_spec])


def test_counting_down_reverses_the_numbers_and_keeps_the_words():
    from mdrl_lib.domains.writing import counting_down, rubric

    assert counting_down("2 bat 17 gem") == "17 bat 2 gem"
    assert counting_down("1 map 12 bus 28 dog") == "28 map 12 bus 1 dog"
    assert counting_down("5 top") == "5 top"
    verse = "3 cat 9 dog 40 gem"
    assert rubric(counting_down(verse), "cdg", len(verse)) == {
        "form": True, "lexicon": True, "letters": True, "ascending": False, "length": True}


def test_cw_warmup_counts_down_for_its_share_of_verses(monkeypatch):
    from mdrl_lib.domains import writing as toy_cw
    from mdrl_lib.domains.base import get_domain

    domain = get_domain("cw")
    splits = domain.build_splits(0, 300, 200)
    pairs = domain.warmup_pairs(splits)
    assert [p for p, _ in pairs] == [e.prompt for e in splits.warmup]
    down = [a != e.answer for (_, a), e in zip(pairs, splits.warmup)]
    assert all(a in (e.answer, toy_cw.counting_down(e.answer)) for (_, a), e in zip(pairs, splits.warmup))
    assert abs(sum(down) / len(down) - toy_cw.DESCENDING_SHARE) < 0.1  # hundreds of draws: sd about 0.03
    scores = domain.score([a for _, a in pairs], [e.spec for e in splits.warmup])
    assert all(s == (0.8 if d else 1.0) for s, d in zip(scores, down))  # a count-down verse misses one check
    monkeypatch.setattr(toy_cw, "DESCENDING_SHARE", 0.0)
    assert domain.warmup_pairs(splits) == [(e.prompt, e.answer) for e in splits.warmup]
    assert domain.world_settings() == {"descending_share": 0.0}


def test_counting_down_in_the_digit_free_world():
    from mdrl_lib.domains.writing import counting_down

    assert counting_down("c bat bh gem", "letters") == "bh bat c gem"
    assert counting_down("c bat bh gem", "letters") == counting_down("2 bat 17 gem").translate(str.maketrans("0123456789", "abcdefghij"))

"""A domain is one place: a fifth domain (``tests/fixtures/fifth_domain.py``, one class per scale) reaches
every table the library derives from the registry without an edit to any other module, and the domains'
names are written nowhere outside ``mdrl_lib/domains`` but in a short list of justified places."""
from __future__ import annotations

import ast
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from mdrl_lib.config import RunConfig
from mdrl_lib.domains import base
from mdrl_lib.evaluation import convention_shares
from mdrl_lib.interference import breakdown, error_category
from mdrl_lib.kit import TOY_WARMUP_WEIGHTS, Kit
from mdrl_lib.plots import DOMAIN_COLORS

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "fifth_domain.py"


def _tables() -> dict:
    return {"names": base.DOMAIN_NAMES, "titles": dict(base.DOMAIN_TITLES), "fractional": dict(base.FRACTIONAL_DOMAINS),
            "weights": dict(TOY_WARMUP_WEIGHTS), "colors": dict(DOMAIN_COLORS), "conventions": list(base.domain_conventions())}


@pytest.fixture
def fifth_domain():
    """Registers the made-up domain ``chem`` at both scales (as importing its module would) and restores the
    registry, and every table derived from it, afterwards."""
    before = _tables()
    spec = importlib.util.spec_from_file_location("fifth_domain_under_test", FIXTURE)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        for scale in base.SCALES:
            if (scale, "chem") in base._REGISTRY:
                base.unregister(scale, "chem")
    assert _tables() == before


def test_a_fifth_domain_reaches_every_table_derived_from_the_registry(fifth_domain):
    old = ("code", "math", "qa", "cw")
    assert base.DOMAIN_NAMES == base.domain_names() == (*old, "chem")
    assert base.DOMAIN_TITLES["chem"] == "Chem"
    assert base.FRACTIONAL_DOMAINS == {"code": "fractional", "cw": "fractional", "chem": "fractional"}
    assert TOY_WARMUP_WEIGHTS == {"code": 1.5, "math": 10.0, "qa": 3.0, "cw": 0.5, "chem": 2.0}
    assert list(DOMAIN_COLORS) == [*old, "chem"] and len({tuple(c) for c in DOMAIN_COLORS.values()}) == 5
    assert list(base.domain_conventions()) == ["math", "qa", "cw", "chem"]
    assert base.domain_class("chem") is fifth_domain.ToyChem
    assert base.domain_class("chem", "full") is fifth_domain.ChemDomain
    assert isinstance(base.get_domain("chem", "full"), fifth_domain.ChemDomain)


def test_the_fifth_domains_class_sorts_its_errors_counts_its_conventions_and_takes_its_options(fifth_domain, tmp_path):
    domain = base.get_domain("chem")
    completions, specs = ["12", "(12)", "13", "x"], [json.dumps({"answer": "12"})] * 4
    scores, details = domain.score(completions, specs), domain.details(completions, specs)
    assert scores == [1.0, 0.5, 0.0, 0.0]
    assert [error_category("chem", s, d) for s, d in zip(scores, details)] == [
        "right", "right content, wrong convention", "wrong content", "no answer"]
    items = pd.DataFrame({"domain": "chem", "item": range(4), "score": scores, "details": details})
    assert breakdown(items).loc["chem"].tolist() == [0.25, 0.25, 0.25, 0.25]
    table = convention_shares(items)
    assert table.loc["chem", "answers"] == 3 and table.loc["chem", "share in the other"] == pytest.approx(1 / 3)
    assert table.loc["chem", "warm-up share of the other"] == 0.3
    kit = Kit(RunConfig.from_params(run_dir=str(tmp_path), data_digit_free=True))
    assert kit._toy_options("chem") == {"numbers": "letters"}
    assert kit._full_scale_options("chem")["source"] == "chem.jsonl"


def test_adding_a_domain_is_its_module_and_one_line_of_the_registry(tmp_path):
    """A copy of the library with the fifth domain's module added and named in ``DOMAIN_MODULES``, and no
    other edit: the domain reaches the names, the run's order, the base's key and the kit."""
    library = tmp_path / "mdrl_lib"
    shutil.copytree(ROOT / "mdrl_lib", library, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(FIXTURE, library / "domains" / "chem.py")
    registry = library / "domains" / "base.py"
    text = registry.read_text()
    line = next(x for x in text.splitlines() if x.startswith("DOMAIN_MODULES"))
    registry.write_text(text.replace(line, line.replace('"sources")', '"chem", "sources")')))
    script = (
        "import json, sys, mdrl_lib\n"
        "from mdrl_lib.config import RunConfig\n"
        "from mdrl_lib.domains.base import DOMAIN_NAMES\n"
        "from mdrl_lib.kit import Base, Kit\n"
        "kit = Kit(RunConfig.from_params(run_dir=sys.argv[1], order='chem,math'))\n"
        "fields = Base().key_fields(kit)\n"
        "print(json.dumps({'file': mdrl_lib.__file__, 'names': DOMAIN_NAMES, 'order': kit.config.order, 'key': kit.key(Base()),\n"
        "                  'weights': fields['warmup_weights'], 'settings': fields['world_settings'],\n"
        "                  'evals': list(kit.evals), 'sizes': [len(kit.splits('chem').train), len(kit.splits('chem').eval)]}))\n")
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "run")], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(out["file"]).parent == library
    assert out["names"] == out["evals"] == ["code", "math", "qa", "cw", "chem"] and out["order"] == ["chem", "math"]
    assert out["weights"]["chem"] == 2.0 and out["settings"]["chem"] == {"boxed_share": 0.3}
    assert out["key"] != "base-5e8dc161c226"  # the four-domain base's key (tests/test_specs.py)
    assert out["sizes"] == [20, 30]


# ---- domain names outside mdrl_lib/domains ---------------------------------------------------------------

# (file under mdrl_lib, the top-level definition that holds them): how many domain-name literals it may write.
# Default values (of a parameter or of a recipe's ``option``) are allowed anywhere and not counted.
JUSTIFIED = {
    ("config.py", "DEFAULT_ORDER"): 4,  # the paper's chain order
    ("claims/nb04.py", "PAPER_ORDER"): 4,  # the chain order of the paper's reported figures
    ("claims/nb04.py", "paper_points"): 1,  # the paper reports those figures for Math only
    ("claims/nb00.py", "base_preconditions"): 2,  # the base must know Math's arithmetic, the premise of C0
    ("interference.py", "RandomDirections"): 1,  # a spec field's default: the damaged domain, as control_specs' default
    ("recipes/nb02.py", "AFTER"): 1,  # C3 again at the Math expert: A of the paper's pair and of "math,auto"
    ("exercises/nb00.py", "_rubric_cases"): 1,  # notebook 00's exercise scores CW's rubric itself
    ("exercises/nb00.py", "_right_number_cases"): 3,  # ... and Math's right-number share, the base's precondition
}


def _domain_literals(path: Path, names: set[str]) -> Counter:
    tree = ast.parse(path.read_text())
    defaults = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            defaults.update(id(d) for d in node.args.defaults + node.args.kw_defaults if d is not None)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "option" \
                and node.args:
            defaults.add(id(node.args[0]))
    found = Counter()
    for top in tree.body:
        targets = getattr(top, "targets", None) or [getattr(top, "target", None)]
        where = getattr(top, "name", None) or getattr(targets[0], "id", type(top).__name__)
        for node in ast.walk(top):
            if isinstance(node, ast.Constant) and node.value in names and id(node) not in defaults:
                found[where] += 1
    return found


def test_domain_names_are_written_only_in_the_domains_modules_and_a_few_justified_places():
    package = ROOT / "mdrl_lib"
    names = set(base.DOMAIN_NAMES)
    found = {(path.relative_to(package).as_posix(), where): count
             for path in sorted(package.rglob("*.py")) if path.parent.name != "domains"
             for where, count in _domain_literals(path, names).items()}
    unjustified = {place: count for place, count in found.items() if count > JUSTIFIED.get(place, 0)}
    assert not unjustified, f"domain names written outside mdrl_lib/domains (move them onto the domain classes): " \
                            f"{unjustified}"

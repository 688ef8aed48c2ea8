"""benchmarks/skill_world.py: its worlds, its criterion (fixed in the script) and its options (no training here)."""
from __future__ import annotations

import pytest

from tests.script_runner import ROOT, load_script


@pytest.fixture(scope="module")
def module():
    return load_script(ROOT / "benchmarks" / "skill_world.py", keep_threads=True)


def test_the_skill_world_drops_only_the_answer_convention(module):
    import mdrl_lib.domains.math as toy_math

    assert module.WORLDS == {"default": toy_math.BOXED_SHARE, "skill": 0.0} and toy_math.BOXED_SHARE == 0.4


def test_the_criterion_needs_both_gaps(module):
    assert module.GAP == 0.15 and module.SAMPLES == 8
    assert module.meets({"gap": 0.2, "content_gap": 0.15})
    assert not module.meets({"gap": 0.3, "content_gap": 0.05})  # a convention gap is not a skill
    assert not module.meets({"gap": 0.1, "content_gap": 0.2})


def test_its_options_parse(module, capsys):
    with pytest.raises(SystemExit) as stop:
        module.main(["--help"])
    assert stop.value.code == 0 and "--worlds" in capsys.readouterr().out

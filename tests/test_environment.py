"""The pinned environments agree, and the project installs the CPU torch it pins."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^\s*-?\s*([A-Za-z0-9_.\-\[\]]+)==([^\s#]+)")


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        match = PIN.match(line)
        if match:
            pins[match.group(1).lower()] = match.group(2)
    return pins


def test_env_files_carry_the_same_exact_pins_as_constraints():
    constraints = _pins(ROOT / "constraints.txt")
    assert "torch" in constraints and len(constraints) >= 15
    assert _pins(ROOT / "environment.yml") == constraints
    assert _pins(ROOT / "binder" / "environment.yml") == constraints


def test_pin_parser_sees_a_drift(tmp_path):
    drifted = (ROOT / "binder" / "environment.yml").read_text().replace("trl==", "trl==0.0.0.")
    (tmp_path / "env.yml").write_text(drifted)
    assert _pins(tmp_path / "env.yml") != _pins(ROOT / "constraints.txt")


def test_every_pyproject_dependency_is_pinned():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [re.split(r"[<>=!\[ ]", d)[0].lower() for d in project["dependencies"] + project["optional-dependencies"]["dev"]]
    assert set(names) <= set(_pins(ROOT / "constraints.txt"))


def test_installed_torch_is_the_pinned_cpu_build():
    torch = pytest.importorskip("torch")
    assert torch.__version__.split("+")[0] == _pins(ROOT / "constraints.txt")["torch"]
    assert torch.version.cuda is None


def test_binder_post_build_stops_on_error():
    text = (ROOT / "binder" / "postBuild").read_text()
    assert "set -e" in text or "set -euo pipefail" in text

"""The claim rules, read from the versioned file ``mdrl_lib/claims/rules.toml``.

Every threshold a claim check or one of its premises is judged by lives in that one file; a check reads it
with :func:`rule`, and :func:`~mdrl_lib.claims.record.record_check` writes :data:`RULES_VERSION` into every
claim record. Introduced in notebook ``00_toy_world`` (the base's preconditions are its first rules).
"""
from __future__ import annotations

import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any

RULES_FILE = Path(__file__).with_name("rules.toml")


@lru_cache(maxsize=None)
def load_rules(path: str | Path = RULES_FILE) -> dict[str, Any]:
    """The rules file at ``path`` as a dict: ``version`` (a string) and one table per section
    (``base``, ``premises``, ``C0`` ... ``C7``). Raises ``FileNotFoundError`` or ``ValueError`` when the
    file is missing, malformed or has no version."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no rules file at {path}")
    try:
        rules = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"the rules file {path} is not valid TOML: {error}") from None
    if not isinstance(rules.get("version"), str) or not rules["version"]:
        raise ValueError(f"the rules file {path} must give a non-empty string `version`")
    return rules


def rule(section: str, name: str, path: str | Path = RULES_FILE) -> Any:
    """The threshold ``name`` of ``section`` (``rule("C5", "rtol")``); a list in the file comes back as a tuple.
    An unknown section or name is a ``KeyError`` that names the valid ones."""
    rules = load_rules(path)
    sections = sorted(k for k, v in rules.items() if isinstance(v, dict))
    if section not in sections:
        raise KeyError(f"the rules file has no section {section!r}; valid sections: {', '.join(sections)}")
    table = rules[section]
    if name not in table:
        raise KeyError(f"section {section!r} of the rules file has no rule {name!r}; valid: {', '.join(sorted(table))}")
    value = table[name]
    return tuple(value) if isinstance(value, list) else value


RULES_VERSION: str = load_rules()["version"]

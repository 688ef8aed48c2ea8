"""A notebook's parameters, declared once: default, type, bounds and help in one frozen dataclass.

Introduced in notebook ``00_toy_world``. Each recipe module (``mdrl_lib.recipes.nbNN``) defines a
``Params`` subclass of :class:`NotebookParams`. Everything else derives from it: the notebook's
papermill cell (:meth:`NotebookParams.papermill_cell`; a test pins the cell to it), ``python -m
mdrl_lib params NN``, the values ``run -p`` and ``plan`` accept, and the first cell of the notebook,
which reads the parameters back with :meth:`NotebookParams.from_namespace` so that a bad value, or a
name papermill injected that the notebook does not declare, stops the notebook at once with one line
naming the valid choices.

Two kinds of field: *run parameters* (:func:`run_param`: ``scale``, ``seed``, ``model``, ...), checked
by :class:`~mdrl_lib.config.RunConfig` and shared by every notebook with one meaning; and the
notebook's own *options* (:func:`option`), each with a :class:`~mdrl_lib.config.Param` declaration.
A name two notebooks share means the same thing in both, with the same default.
"""
from __future__ import annotations

import ast
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

from mdrl_lib.config import ConfigError, Param, RunConfig, _unknown_message

# what an IPython kernel puts in a notebook's namespace by itself
_KERNEL_NAMES = frozenset({"In", "Out", "get_ipython", "exit", "quit", "open"})
_TYPE_NAMES = {str: "str", int: "int", float: "float", bool: "bool"}


def run_param(default: Any, help: str, type: type | None = None) -> Any:
    """A field that is a run parameter (checked by :class:`RunConfig`), with the notebook's help text."""
    kind = type or builtin_type(default)
    return field(default=default, metadata={"run": True, "type": kind, "help": help})


def option(default: Any, help: str, type: type | None = None, **bounds: Any) -> Any:
    """A field that is one of the notebook's own options: its :class:`Param` holds type, bounds and help.
    A ``number_list`` option is written as a string ("0,1,2") whatever the type of its numbers."""
    kind = type or builtin_type(default)
    written = str if bounds.get("number_list") else kind
    return field(default=default, metadata={"param": Param(kind, help, **bounds), "type": written, "help": help})


def domain_pairs() -> tuple[str, ...]:
    """Every ordered pair ``"a,b"`` of two different domains (the choices of a pair parameter)."""
    from mdrl_lib.domains.base import DOMAIN_NAMES

    return tuple(f"{a},{b}" for a in DOMAIN_NAMES for b in DOMAIN_NAMES if a != b)


def chosen_pairs() -> tuple[str, ...]:
    """``"a,auto"`` for every domain: A given, B the later stage of the run's chain that lowers A most on the
    selection half of A's held-out items (:func:`mdrl_lib.pairs.choose_pair`)."""
    from mdrl_lib.domains.base import DOMAIN_NAMES

    return tuple(f"{a},auto" for a in DOMAIN_NAMES)


def resolve_pairs(kit, params: "NotebookParams", fields: tuple[str, ...], *, build: bool = True):
    """``params`` with each pair field of ``fields`` that reads ``"A,auto"`` replaced by ``"A,B"``, B chosen
    from the run's chain (RL seed 0, the order ``kit.config.order``; :func:`mdrl_lib.pairs.chain_choice`).
    ``build=False``: return ``None`` instead of scoring or training a chain that is not stored yet (a plan
    lists :func:`mdrl_lib.pairs.prerequisites` then). Introduced in ``03_perturbation_theory``."""
    from mdrl_lib.pairs import AUTO, chain_choice

    changes = {}
    for name in fields:
        value = getattr(params, name)
        if not value or value.split(",")[1] != AUTO:
            continue
        choice = chain_choice(kit, kit.config.order, value.split(",")[0], build=build)
        if choice is None:
            return None
        changes[name] = choice.pair
    return dataclasses.replace(params, **changes) if changes else params


def pair_choice_text(kit, value: str) -> str:
    """How a pair parameter's ``value`` was settled, in words: the rule, every candidate's damage and the choice
    (``"A,auto"``: :meth:`mdrl_lib.pairs.PairChoice.text`, from the run's chain), or that it was given."""
    from mdrl_lib.pairs import AUTO, chain_choice

    a, b = value.split(",")
    if b != AUTO:
        return f"The pair {a},{b} was given as a parameter (\"{a},auto\" chooses it from the chain's damage instead)."
    return chain_choice(kit, kit.config.order, a).text()


def used_and_planned_keys(kit, specs) -> tuple[set[str], set[str]]:
    """(the keys of every artifact ``kit`` was asked for, the keys of ``specs`` and of everything they are built
    from, :class:`~mdrl_lib.plan.Pending` entries skipped): equal when a notebook used exactly what its plan
    lists. Introduced in ``04_sequential_rl``."""
    from mdrl_lib.plan import Pending
    from mdrl_lib.specs import as_spec

    planned: set[str] = set()
    todo = [s for s in specs if not isinstance(s, Pending)]
    while todo:
        spec = as_spec(todo.pop())
        if kit.key(spec) not in planned:
            planned.add(kit.key(spec))
            todo += list(spec.inputs())
    return set(kit.requested_keys()), planned


def pair_plan(kit, params: "NotebookParams", fields: tuple[str, ...], complete) -> list:
    """A recipe's plan when some of its pair ``fields`` may read ``"A,auto"``: what the choice reads (the chain's
    stages and scores), then ``complete(resolved_params)`` once the chain is scored, or a
    :class:`~mdrl_lib.plan.Pending` entry until then (nothing is trained to list a plan)."""
    from mdrl_lib.pairs import AUTO, prerequisites
    from mdrl_lib.plan import Pending

    auto = [name for name in fields if getattr(params, name) and getattr(params, name).split(",")[1] == AUTO]
    if not auto:
        return complete(params)
    needs = prerequisites(kit, kit.config.order)
    resolved = resolve_pairs(kit, params, fields, build=False)
    if resolved is None:
        return [*needs, Pending(f"{', '.join(auto)} = \"A,auto\": the pair is chosen from the chain's damage", tuple(needs))]
    return [*needs, *complete(resolved)]


# Options several notebooks declare: one declaration each, so a shared name has one meaning and one default.
def chain_order() -> Any:
    return run_param("code,math,qa,cw", "the chain's domain order (the paper's: Code -> Math -> QA -> CW)")


def refresh_domain() -> Any:
    from mdrl_lib.domains.base import DOMAIN_NAMES

    return option("math", "A: the damaged domain, refreshed from the end of the chain", choices=DOMAIN_NAMES)


def objective_prompts() -> Any:
    return option(64, "prompts of the objective batch of A (L_A: the NLL of verified-correct samples of A)",
                  minimum=1, maximum=10**6)


def objective_samples() -> Any:
    return option(4, "completions sampled per prompt for L_A; only verified-correct ones enter", minimum=1,
                  maximum=1024)


def conflict_route_fraction() -> Any:
    return option(0.2, "q: a domain's active route is its top q of MLP channels at answer positions; A's and B's "
                       "shared ones hold the conflict subspace", above=0.0, maximum=0.5)


def conflict_route_prompts() -> Any:
    return option(100, "RL training prompts per domain whose activity defines those routes", minimum=1,
                  maximum=10**6)


def builtin_type(value: Any) -> type:
    """The declared type of a default: ``bool``, ``int``, ``float`` or ``str``."""
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind
    raise TypeError(f"a parameter default must be a bool, int, float or str (or give type=), got {value!r}")


@dataclass(frozen=True)
class NotebookParams:
    """The parameters every notebook declares; a recipe's ``Params`` adds its own options.

    Constructing one checks every value (``ConfigError`` naming the field and what is allowed) and
    builds the run's :class:`RunConfig` (:attr:`config`). Subclasses check relations between fields in
    :meth:`validate`.
    """

    notebook: ClassVar[str] = ""

    scale: str = run_param("toy", '"toy" (CPU, minutes) or "full" (the paper\'s model and data; GPU and hub access)')
    seed: int = run_param(0, "seeds the data splits, the model's initialisation and the warm-up")
    model: str = run_param(None, 'None: the scale\'s model ("toy" or Qwen/Qwen3-4B-Thinking-2507); or a causal LM '
                                 "id or local directory", type=str)
    warmup_steps: int = run_param(None, "None: the scale's preset (1800 toy steps, 0 at full scale); give every "
                                        "notebook the same value to use one base", type=int)
    run_dir: str = run_param("", '"" means $MDRL_RUN_DIR or runs/<scale>-seed<seed>; where checkpoints are cached')

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if "param" in f.metadata:
                object.__setattr__(self, f.name, f.metadata["param"].check(f.name, getattr(self, f.name)))
        object.__setattr__(self, "_config", RunConfig.from_params(**self.run_values()))
        self.validate()

    def validate(self) -> None:
        """Relations between fields (a subclass's hook); raise :class:`ConfigError` naming the field."""

    # ---- reading the values ------------------------------------------------------------------

    @property
    def config(self) -> RunConfig:
        """The run's configuration from the run parameters."""
        return self._config  # type: ignore[attr-defined]

    @classmethod
    def run_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if f.metadata.get("run")]

    @classmethod
    def option_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if not f.metadata.get("run")]

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every parameter's default, by name (what ``python -m mdrl_lib params NN`` prints)."""
        return {f.name: f.default for f in dataclasses.fields(cls)}

    def run_values(self) -> dict[str, Any]:
        """The run parameters, as :meth:`RunConfig.from_params` takes them."""
        return {name: getattr(self, name) for name in self.run_names()}

    def options(self) -> dict[str, Any]:
        """The notebook's own options, checked."""
        return {name: getattr(self, name) for name in self.option_names()}

    # ---- building one ------------------------------------------------------------------------

    @classmethod
    def from_values(cls, values: Mapping[str, Any] | None = None, **more: Any) -> "NotebookParams":
        """The parameters from ``values`` (missing names keep their defaults). A name this notebook does
        not declare is an error that lists the valid ones."""
        given = {**dict(values or {}), **more}
        unknown = sorted(set(given) - set(cls.names()))
        if unknown:
            raise ConfigError(f"{cls.notebook}: " + _unknown_message(unknown, cls.names()))
        return cls(**given)

    @classmethod
    def from_namespace(cls, namespace: Mapping[str, Any]) -> "NotebookParams":
        """The parameters as a notebook's first cell sees them (its ``globals()``).

        A name that papermill injected (the kernel's ``# Parameters`` cell) and the notebook does not
        declare is an error naming the valid parameters: papermill itself only warns, and the run would
        go on without it.
        """
        injected = injected_names(namespace.get("In", ()))
        unknown = sorted(injected - set(cls.names()))
        if unknown:
            raise ConfigError(f"{cls.notebook}: " + _unknown_message(unknown, cls.names()))
        return cls(**{name: namespace[name] for name in cls.names() if name in namespace})

    # ---- describing it -------------------------------------------------------------------------

    @classmethod
    def papermill_cell(cls) -> str:
        """The notebook's ``parameters`` cell: one typed literal per line with its help as a comment."""
        lines = []
        for f in dataclasses.fields(cls):
            lines.append(f"{f.name}: {_TYPE_NAMES[f.metadata['type']]} = {literal(f.default)}  # {f.metadata['help']}")
        return "\n".join(lines)

    @classmethod
    def declarations(cls) -> list[dict[str, Any]]:
        """One row per parameter: name, type, default, whether it is a run parameter, what is allowed, help."""
        from mdrl_lib.config import parameter_declarations

        run = parameter_declarations()
        rows = []
        for f in dataclasses.fields(cls):
            declared = f.metadata.get("param") or run.get(f.name)
            rows.append({"name": f.name, "type": _TYPE_NAMES[f.metadata["type"]], "default": literal(f.default),
                         "kind": "run" if f.metadata.get("run") else "notebook",
                         "allowed": declared.describe() if declared is not None else "",
                         "help": f.metadata["help"]})
        return rows


def literal(value: Any) -> str:
    """``value`` as it is written in a parameters cell (strings in double quotes)."""
    return json.dumps(value) if isinstance(value, str) else repr(value)


def injected_names(history: Any) -> set[str]:
    """The names papermill assigned in the kernel: the targets of the last ``# Parameters`` cell in an
    IPython input history (``In``); empty when nothing was injected."""
    cells = [c for c in (history or ()) if isinstance(c, str) and c.startswith("# Parameters\n")]
    if not cells:
        return set()
    try:
        tree = ast.parse(cells[-1])
    except SyntaxError:
        return set()
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names - _KERNEL_NAMES

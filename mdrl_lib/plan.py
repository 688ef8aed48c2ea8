"""What the notebooks will ask the kit to build, what that costs, and building it with several workers.

Used by ``python -m mdrl_lib plan`` and ``run`` (the pipeline builds every artifact the selected
notebooks need before they run, so that independent stages train at once) and by the test
configuration (nbval then finds them built). Each notebook's needs come from its recipe
(:mod:`mdrl_lib.recipes`), the same module the notebook takes its parameters and specs from; a test
records what each notebook asks the kit for and holds it against the recipe's plan.

A worker is one process with one torch thread that calls :meth:`Kit.get`; the store's per-key lock
makes two workers (or a worker and a notebook) that want one artifact build it once.
"""
from __future__ import annotations

import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from mdrl_lib.config import ConfigError, RunConfig

# Seconds per unit of work at toy scale, measured on a 2-core machine with one torch thread per process
# (benchmarks/toy_costs.py): a warm-up step of 64 examples, a GRPO step of 8 prompts x 8 completions, a
# plain gradient step, one scoring or objective batch, one rollback sweep over its budgets. Estimates for
# the plan's printout only.
TOY_SECONDS = {"warmup_step": 0.05, "grpo_step": 0.12, "gd_step": 0.05, "scores": 2.0, "objective": 2.0,
               "rollback": 8.0}
WORKER_MEMORY_GB = {"toy": 1.0, "full": 24.0}
# The toy scale's time budget on this machine kind (2 cores, 24 GB), for the notebooks of today and those to
# come; measured by benchmarks/pipeline_costs.py (work) and by timing the two make targets from a fresh clone.
TOY_BUDGET = {"work_per_world_cpu_s": 650, "make_toy_s": 570, "make_test_s": 840}
# CPUs of this machine kind differ by up to 1.7x in speed: the budget's seconds hold on a CPU whose seed-0 base
# warm-up (the base's manifest seconds, one thread) takes this long (an AVX-512 Xeon, where the budget was last
# held); budget_on_this_cpu scales them by the warm-up a run measured.
BUDGET_REFERENCE_WARMUP_S = 64.0


def budget_on_this_cpu(warmup_seconds: float) -> dict[str, float]:
    """:data:`TOY_BUDGET` scaled to a CPU whose seed-0 base warm-up took ``warmup_seconds`` (one thread), against
    :data:`BUDGET_REFERENCE_WARMUP_S`: each figure times warmup_seconds / 64. Introduced with
    ``benchmarks/pipeline_costs.py``."""
    if not warmup_seconds > 0:
        raise ValueError(f"warmup_seconds must be positive, got {warmup_seconds!r}")
    factor = warmup_seconds / BUDGET_REFERENCE_WARMUP_S
    return {name: value * factor for name, value in TOY_BUDGET.items()}


@dataclass(frozen=True)
class Planned:
    """One artifact a notebook needs: its spec and the run parameters of the kit that builds it."""

    spec: Any
    run_params: tuple[tuple[str, Any], ...]
    notebooks: tuple[str, ...] = ()

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.run_params)


@dataclass
class Node:
    """An artifact of the plan with what it waits for; ``cost`` in estimated seconds (toy) or steps (full)."""

    key: str
    label: str
    kind: str
    planned: Planned
    needs: set[str] = field(default_factory=set)
    stored: bool = False
    cost: float = 0.0
    priority: float = 0.0


# ------------------------------------------------------------------------------ the notebooks' recipes


@dataclass(frozen=True)
class Pending:
    """A part of a notebook's plan that depends on data not built yet (notebook 03's pair is chosen from notebook
    04's chain): a recipe's ``plan`` lists it, after ``needs`` (the specs the choice reads), when it cannot
    plan the rest without building. The plan is complete once ``needs`` are stored and it is listed again."""

    reason: str
    needs: tuple = ()


def notebook_params(notebook: str, overrides: Mapping[str, Any] | None = None):
    """The checked parameters of ``notebook`` (a file stem): its recipe's defaults under those of
    ``overrides`` that it declares (as ``python -m mdrl_lib run`` passes them)."""
    from mdrl_lib.recipes import recipe

    params_type = recipe(notebook).Params
    declared = set(params_type.names())
    return params_type.from_values({k: v for k, v in (overrides or {}).items() if k in declared})


def notebook_plan(path: Path, overrides: Mapping[str, Any] | None = None,
                  pending: list[tuple[str, str]] | None = None) -> list[Planned]:
    """The artifacts notebook ``path`` will ask for: its recipe's ``plan`` under the notebook's defaults and
    those ``overrides`` it declares. A notebook without a recipe needs nothing built in advance. Where the plan
    holds a :class:`Pending` part, its ``needs`` are planned and ``(notebook, reason)`` is appended to
    ``pending`` (when given): list the plan again once they are built."""
    from mdrl_lib.kit import open_kit
    from mdrl_lib.recipes import has_recipe, recipe

    if not has_recipe(path.stem):
        return []
    params = notebook_params(path.stem, overrides)
    run_params = params.run_values()
    kit = open_kit(params.config)
    planned = []
    for entry in recipe(path.stem).plan(kit, params):
        if isinstance(entry, Pending):
            if pending is not None:
                pending.append((path.stem, entry.reason))
            continue
        extra, spec = entry if isinstance(entry, tuple) else ((), entry)
        planned.append(Planned(spec, tuple(sorted({**run_params, **dict(extra)}.items())), (path.stem,)))
    return planned


# ------------------------------------------------------------------------------ the graph and its cost


def estimate(kind: str, spec: Any, config: RunConfig) -> float:
    """Estimated cost of building ``spec``: seconds at toy scale, optimizer steps at full scale."""
    toy = config.scale == "toy"
    own = spec.toy_seconds(config) if toy and hasattr(spec, "toy_seconds") else None
    if own is not None:
        return float(own)
    if kind == "base":
        return TOY_SECONDS["warmup_step"] * config.warmup.steps if toy else 0.0
    if kind in ("stage", "refresh"):
        steps = spec.steps if spec.steps is not None else (
            config.rl.refresh_steps if kind == "refresh" else config.rl.steps)
        return TOY_SECONDS["grpo_step"] * steps if toy else float(steps)
    if kind == "gd":
        return TOY_SECONDS["gd_step"] * spec.steps if toy else float(spec.steps)
    return TOY_SECONDS.get(kind, 1.0) if toy else 0.0


def build_graph(planned: Iterable[Planned]) -> dict[str, Node]:
    """Every planned artifact and its inputs (recursively) as nodes keyed by cache key, each with the
    keys it waits for, whether it is stored, its cost and its priority (the cost of the longest chain of
    builds that starts at it: the critical path is scheduled first)."""
    from mdrl_lib.kit import as_spec, open_kit

    kits: dict[tuple, Any] = {}
    nodes: dict[str, Node] = {}

    def visit(spec: Any, item: Planned) -> str:
        kit = kits.get(item.run_params)
        if kit is None:
            kit = kits[item.run_params] = open_kit(RunConfig.from_params(**item.params))
        spec = as_spec(spec)
        key = kit.key(spec)
        if key in nodes:
            nodes[key].planned = Planned(nodes[key].planned.spec, nodes[key].planned.run_params,
                                         tuple(dict.fromkeys(nodes[key].planned.notebooks + item.notebooks)))
            return key
        node = Node(key, spec.label(), spec.kind, Planned(spec, item.run_params, item.notebooks))
        node.stored = kit.store.get(key) is not None
        nodes[key] = node
        if not node.stored:
            node.cost = estimate(spec.kind, spec, kit.config)
            node.needs = {visit(needed, item) for needed in spec.inputs()}
            node.needs = {k for k in node.needs if not nodes[k].stored}
        return key

    for item in planned:
        visit(item.spec, item)
    children: dict[str, list[str]] = {k: [] for k in nodes}
    for key, node in nodes.items():
        for needed in node.needs:
            children[needed].append(key)

    def priority(key: str) -> float:
        node = nodes[key]
        if not node.priority:
            node.priority = node.cost + max((priority(c) for c in children[key]), default=0.0)
        return node.priority

    for key in nodes:
        priority(key)
    return nodes


CHEAP_SECONDS = 10.0  # at toy scale, a build this short goes first: it delays the rest little and may free a notebook


def schedule_order(node: Node) -> tuple:
    """Sort key of a ready node: cheap builds first, earliest notebook first (a notebook starts once its own
    artifacts are in), then the rest by priority (the longest chain of builds below it first)."""
    cheap = node.cost <= CHEAP_SECONDS if node.cost else True
    first_notebook = min(node.planned.notebooks, default="")
    return (0, first_notebook, -node.priority) if cheap else (1, -node.priority, first_notebook)


def critical_path(nodes: Mapping[str, Node]) -> float:
    """The cost of the longest chain of builds (no number of workers finishes sooner)."""
    return max((n.priority for n in nodes.values() if not n.stored), default=0.0)


def wall_estimate(nodes: Mapping[str, Node], workers: int) -> float:
    """A list-scheduling estimate of the wall time with ``workers`` workers: the simulated schedule the
    builder follows (:func:`schedule_order` among the ready nodes)."""
    pending = {k: set(n.needs) for k, n in nodes.items() if not n.stored}
    running: list[tuple[float, str]] = []
    now = 0.0
    while pending or running:
        ready = sorted((k for k, needs in pending.items() if not needs), key=lambda k: schedule_order(nodes[k]))
        while ready and len(running) < workers:
            key = ready.pop(0)
            del pending[key]
            running.append((now + nodes[key].cost, key))
        running.sort()
        now, done = running.pop(0)
        for needs in pending.values():
            needs.discard(done)
    return now


def default_workers(scale: str) -> int:
    """Workers that fit this machine: one per CPU core at toy scale (one torch thread each), capped by
    the memory available (:data:`WORKER_MEMORY_GB` each); one at full scale (a GPU holds one model)."""
    if scale == "full":
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, int(available_memory_gb() // WORKER_MEMORY_GB["toy"])))


def available_memory_gb() -> float:
    """Memory available to new processes (``MemAvailable`` of /proc/meminfo; 4 GB where it cannot be read)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 4.0


# ------------------------------------------------------------------------------ building


_KITS: dict[tuple, Any] = {}


def _build_one(run_params: tuple[tuple[str, Any], ...], spec: Any) -> tuple[str, float]:
    """In a worker: build ``spec`` with the kit of ``run_params`` (one torch thread at toy scale)."""
    import torch

    from mdrl_lib.kit import open_kit

    kit = _KITS.get(run_params)
    if kit is None:
        kit = _KITS[run_params] = open_kit(RunConfig.from_params(**dict(run_params)))
        if kit.config.scale == "toy":
            torch.set_num_threads(1)
    start = time.perf_counter()
    artifact = kit.get(spec, progress=False)
    return artifact.key, time.perf_counter() - start


def build(nodes: Mapping[str, Node], workers: int, log: Callable[[str], None] = print,
          on_built: Callable[[str], None] | None = None) -> dict[str, float]:
    """Build every node that is not stored, ``workers`` at a time, each after what it needs, in
    :func:`schedule_order`; ``on_built(key)`` is called as each finishes. Returns key -> seconds. A failed
    build stops the plan (the store keeps nothing half-written) and raises with the artifact's label."""
    import multiprocessing

    if workers < 1:
        raise ConfigError(f"workers: must be at least 1, got {workers}")
    pending = {k: set(n.needs) for k, n in nodes.items() if not n.stored}
    seconds: dict[str, float] = {}
    if not pending:
        return seconds
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no torch threads inherited by fork
    running: dict[Future, str] = {}
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        while pending or running:
            ready = sorted((k for k, needs in pending.items() if not needs), key=lambda k: schedule_order(nodes[k]))
            for key in ready[:max(0, workers - len(running))]:
                del pending[key]
                node = nodes[key]
                running[pool.submit(_build_one, node.planned.run_params, node.planned.spec)] = key
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in done:
                key = running.pop(future)
                try:
                    _, took = future.result()
                except Exception as error:
                    for other in running:
                        other.cancel()
                    raise RuntimeError(f"building {nodes[key].label} ({key}) failed: "
                                       f"{type(error).__name__}: {error}") from error
                seconds[key] = took
                if on_built is not None:
                    on_built(key)
                log(f"  built {nodes[key].label} in {took:.0f} s ({time.perf_counter() - start:.0f} s elapsed)")
                for needs in pending.values():
                    needs.discard(key)
    return seconds


class BuildProcess:
    """``python -m mdrl_lib plan --build`` in a child process, so that a notebook can start as soon as its
    own artifacts are in the store while the workers go on with the next notebooks' (``python -m mdrl_lib
    run``). A separate process keeps the workers' pool away from the notebook client's sockets: run from a
    thread of the same process, a pool shutting down mid-notebook once left papermill waiting forever.

    ``nodes``: the plan (:func:`plan_notebooks`) the child builds; ``command``: its command line."""

    def __init__(self, nodes: Mapping[str, Node], command: Sequence[str], store_root: Path,
                 poll_seconds: float = 1.0, replan: Callable[[str], Mapping[str, Node]] | None = None,
                 pending: Iterable[str] = ()) -> None:
        import subprocess

        self._nodes = nodes
        self._replan = replan
        self._pending = set(pending)
        self._store_root = Path(store_root)
        self._poll = poll_seconds
        self.process = subprocess.Popen(list(command))

    def _stored(self, key: str) -> bool:
        return (self._store_root / key / "manifest.json").is_file()

    def _check(self) -> None:
        code = self.process.poll()
        if code not in (None, 0):
            raise RuntimeError(f"building the notebooks' artifacts failed (exit code {code}); see the lines above")

    def wait_for(self, notebook: str) -> None:
        """Block until every artifact planned for ``notebook`` (a file stem) is stored, or the build has
        ended; raise if it failed. A notebook whose plan was pending (:class:`Pending`) is planned again with
        ``replan`` once its first part is stored, and waited for again."""
        self._wait(notebook, self._nodes)
        if notebook in self._pending and self._replan is not None and self.process.poll() is None:
            self._wait(notebook, self._replan(notebook))

    def _wait(self, notebook: str, nodes: Mapping[str, Node]) -> None:
        wanted = [k for k, n in nodes.items() if notebook in n.planned.notebooks and not n.stored]
        while True:
            self._check()
            if all(self._stored(k) for k in wanted) or self.process.poll() is not None:
                return
            time.sleep(self._poll)

    def join(self) -> None:
        """Block until the build has ended; raise if it failed."""
        self.process.wait()
        self._check()


def format_plan(nodes: Mapping[str, Node], scale: str, workers: int,
                pending: Sequence[tuple[str, str]] = ()) -> str:
    """The plan as text: one line per artifact (status, estimate, label, notebooks), then the totals, and a line
    per notebook whose plan waits for data (``pending``: ``(notebook, reason)``; its estimate is then low)."""
    unit = "s" if scale == "toy" else "steps"
    todo = [n for n in nodes.values() if not n.stored]
    lines = [f"{len(nodes)} artifacts, {len(todo)} to build, {len(nodes) - len(todo)} stored"]
    for node in sorted(nodes.values(), key=lambda n: (n.stored, -n.priority, n.label)):
        status = "stored" if node.stored else f"~{node.cost:.0f} {unit}" if node.cost else "build"
        lines.append(f"  {status:>10}  {node.label}  [{', '.join(node.planned.notebooks)}]")
    total = sum(n.cost for n in todo)
    if scale == "toy":
        lines.append(f"estimated: {total:.0f} s of work; about {wall_estimate(nodes, workers):.0f} s with {workers} "
                     f"worker(s) (the longest chain alone: {critical_path(nodes):.0f} s)")
        worlds = world_costs(todo)
        lines.append(f"budget: {TOY_BUDGET['work_per_world_cpu_s']} s of work per world seed ("
                     + ", ".join(f"{w}: {c:.0f} s to build" + (" (over budget)" if c > TOY_BUDGET["work_per_world_cpu_s"]
                                                               else "") for w, c in worlds.items())
                     + f"); make toy {TOY_BUDGET['make_toy_s']} s after install, make test {TOY_BUDGET['make_test_s']} s")
    else:
        lines.append(f"estimated: {total:.0f} optimizer steps to train; the time depends on the GPUs "
                     f"(see the README's full-scale section)")
    for notebook, reason in dict.fromkeys(pending):
        lines.append(f"not planned yet: part of {notebook} ({reason}); it is planned once what it reads is built, so "
                     f"the estimate above leaves it out")
    return "\n".join(lines)


def world_costs(nodes: Iterable[Node]) -> dict[str, float]:
    """Estimated cost of ``nodes`` by world: a run seed, and the digit-free world apart (each has its own base)."""
    out: dict[str, float] = {}
    for node in nodes:
        params = node.planned.params
        name = f"world seed {params.get('seed') or 0}" + (" (digit-free)" if params.get("data_digit_free") else "")
        out[name] = out.get(name, 0.0) + node.cost
    return out


def plan_notebooks(paths: Sequence[Path], overrides: Mapping[str, Any] | None = None,
                   pending: list[tuple[str, str]] | None = None) -> dict[str, Node]:
    """The graph of every artifact the notebooks ``paths`` need under ``overrides``; ``pending`` (when given)
    receives ``(notebook, reason)`` for each plan that is not complete yet (:class:`Pending`)."""
    planned: list[Planned] = []
    for path in paths:
        planned += notebook_plan(path, overrides, pending)
    return build_graph(planned)


def build_in_rounds(plan_once: Callable[[list], dict[str, Node]], workers: int, log: Callable[[str], None] = print,
                    rounds: int = 3) -> dict[str, float]:
    """Build a plan that may be incomplete: ``plan_once(pending)`` lists the plan (appending to ``pending`` the
    notebooks whose plans wait for data), :func:`build` builds it, and the plan is listed again while some
    notebook was pending and the last round built something, at most ``rounds`` times. Returns key -> seconds."""
    seconds: dict[str, float] = {}
    for _ in range(rounds):
        pending: list[tuple[str, str]] = []
        nodes = plan_once(pending)
        built = build(nodes, workers, log=log)
        seconds.update(built)
        if not pending or not built:
            break
        log(f"  planned again: {', '.join(sorted({n for n, _ in pending}))} (their plans waited for what was just built)")
    return seconds

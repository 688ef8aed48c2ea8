"""``python -m mdrl_lib``: run the notebooks with papermill, list their parameters.

Introduced in the README's quickstart. ``run`` executes the ordered notebooks into a run directory,
passing ``-p NAME VALUE`` overrides to every notebook that declares the parameter; a failing
notebook makes it exit non-zero, naming the notebook and the cell.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"


class CliError(Exception):
    """A user error reported as one line, with exit status 2."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            return run(args)
        if args.command == "plan":
            return plan(args)
        if args.command == "params":
            print(format_parameters(_find_notebook(args.notebook, args.notebooks_dir)))
            return 0
        if args.command == "replicate":
            return replicate_command(args)
        if args.command == "report":
            print(format_ledger(args.run_dir))
            return 0
        if args.command == "list":
            for path in list_notebooks(args.notebooks_dir):
                print(path.name)
            return 0
    except CliError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    parser.print_help()
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mdrl_lib",
        description="Run the mdrl-kit notebooks with papermill and inspect their parameters.",
        epilog="Example: python -m mdrl_lib run -p scale toy -p seed 1 --run-dir runs/seed1",
    )
    parser.add_argument("--notebooks-dir", type=Path, default=NOTEBOOKS_DIR,
                        help=f"where the notebooks live (default: {NOTEBOOKS_DIR})")
    sub = parser.add_subparsers(dest="command")
    run_p = sub.add_parser("run", help="execute the notebooks in order into a run directory")
    run_p.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                       help="a parameter override passed to each notebook that declares NAME")
    run_p.add_argument("--run-dir", type=Path, default=None,
                       help="directory for executed notebooks and cached artifacts "
                            "(default: runs/<scale>-seed<seed>)")
    run_p.add_argument("--only", nargs="+", default=None, metavar="NOTEBOOK",
                       help="run only these notebooks (names or two-digit prefixes, e.g. 00 01)")
    run_p.add_argument("--log-output", action="store_true", help="stream cell output to the terminal")
    run_p.add_argument("--workers", type=int, default=None,
                       help="processes that build the notebooks' artifacts before they run (default: one per core "
                            "at toy scale, as memory allows; 0: let each notebook build its own)")
    plan_p = sub.add_parser("plan", help="list the artifacts the notebooks need, with a cost estimate; "
                                         "--build builds them")
    plan_p.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="a parameter override, as for run")
    plan_p.add_argument("--run-dir", type=Path, default=None, help="the run directory (default: as for run)")
    plan_p.add_argument("--only", nargs="+", default=None, metavar="NOTEBOOK", help="plan only these notebooks")
    plan_p.add_argument("--workers", type=int, default=None,
                        help="processes that build at once (default: one per core at toy scale, as memory allows)")
    plan_p.add_argument("--build", action="store_true", help="build what is not stored yet")
    plan_p.add_argument("--quiet", action="store_true", help="print only what is built, not the plan")
    params_p = sub.add_parser("params", help="list a notebook's parameters with types and help")
    params_p.add_argument("notebook", help="a notebook name or two-digit prefix, e.g. 00")
    sub.add_parser("list", help="list the notebooks in order")
    rep_p = sub.add_parser("replicate", help="run the toy pipeline over fresh world seeds (1000-1099) in parallel "
                                             "workers that resume after a kill, and write the reference ledger")
    rep_p.add_argument("--seeds", required=True, help="world seeds from 1000-1099: a range '1000-1009', a list "
                                                      "'1000,1003' or both")
    rep_p.add_argument("--workers", type=int, default=1, help="seeds run at once, each with one build worker "
                                                              "(default 1; 2 on a 2-core machine)")
    rep_p.add_argument("--root", type=Path, default=None,
                       help="where the seeds' run directories go (default: runs/reference-v<rules version>)")
    rep_p.add_argument("--out", type=Path, default=None,
                       help="the reference ledger to write (default: docs/reference/ledger-v<rules version>.json "
                            "for the whole pipeline, <root>/ledger.json with --only or -p)")
    rep_p.add_argument("--min-seeds", type=int, default=None,
                       help="refuse a ledger over fewer included seeds (default: the rules file's [reference] "
                            "min_seeds, 10)")
    rep_p.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                       help="a parameter override passed to every seed's run (not seed or scale)")
    rep_p.add_argument("--only", nargs="+", default=None, metavar="NOTEBOOK",
                       help="run only these notebooks in each seed (a quick check of the command; not a reference)")
    report_p = sub.add_parser("report", help="print the claims ledger of a run directory (C0-C7, and the kit's own K1)")
    report_p.add_argument("run_dir", type=Path, help="a run directory, e.g. runs/toy")
    return parser


def list_notebooks(notebooks_dir: Path = NOTEBOOKS_DIR) -> list[Path]:
    """The ordered notebooks: ``NN_name.ipynb`` files sorted by name."""
    if not notebooks_dir.is_dir():
        raise CliError(f"notebooks directory {notebooks_dir} does not exist")
    return sorted(p for p in notebooks_dir.glob("[0-9][0-9]_*.ipynb"))


def _find_notebook(name: str, notebooks_dir: Path) -> Path:
    notebooks = list_notebooks(notebooks_dir)
    for path in notebooks:
        if name in (path.name, path.stem, path.stem[:2]):
            return path
    raise CliError(f"unknown notebook {name!r}; valid notebooks: {', '.join(p.stem for p in notebooks)}")


def notebook_parameters(path: Path) -> list[str]:
    """The parameter names a notebook declares: its recipe's (:mod:`mdrl_lib.recipes`), or, for a notebook
    without a recipe, its parameters cell as papermill reads it."""
    from mdrl_lib.recipes import has_recipe, recipe

    if has_recipe(path.stem):
        return recipe(path.stem).Params.names()
    import papermill

    return list(papermill.inspect_notebook(str(path)))


def format_parameters(path: Path) -> str:
    """A table of one notebook's parameters: name, type, default, what is allowed and help, from its recipe."""
    from mdrl_lib.recipes import has_recipe, recipe

    if not has_recipe(path.stem):  # a notebook of the user's own: its parameters cell, as papermill reads it
        import papermill

        params = papermill.inspect_notebook(str(path))
        if not params:
            return f"{path.name} has no parameters cell"
        width = max(len(n) for n in params)
        return "\n".join([f"Parameters of {path.name} (no recipe: its parameters cell):"] + [
            f"  {name:<{width}}  {info['inferred_type_name']:<8} default {info['default']:<14} {info['help']}".rstrip()
            for name, info in params.items()])
    rows = recipe(path.stem).Params.declarations()
    width = max(len(r["name"]) for r in rows)
    lines = [f"Parameters of {path.name} (run: checked by the run configuration; notebook: this notebook's own):"]
    for r in rows:
        lines.append(f"  {r['name']:<{width}}  {r['type']:<5} {r['kind']:<8} default {r['default']:<14} {r['help']}"
                     + (f" [{r['allowed']}]" if r["allowed"] else ""))
    return "\n".join(lines)


def parse_value(text: str) -> Any:
    """A ``-p`` value as papermill would read it: int, float, bool, None or the string itself."""
    from papermill.cli import _resolve_type

    return _resolve_type(text)


def _selection(args: argparse.Namespace) -> tuple[list[Path], dict[str, Any], Any, Path, dict[Path, dict]]:
    """The notebooks, checked overrides, run config, run directory and declared parameters of a
    ``run`` or ``plan`` command; every value is checked before anything runs."""
    from mdrl_lib.config import ConfigError, RunConfig, _unknown_message, parameter_names
    from mdrl_lib.plan import notebook_params
    from mdrl_lib.recipes import has_recipe

    overrides = {name: parse_value(value) for name, value in args.parameter}
    notebooks = list_notebooks(args.notebooks_dir)
    if args.only:
        notebooks = [_find_notebook(n, args.notebooks_dir) for n in args.only]
    if not notebooks:
        raise CliError(f"no notebooks found in {args.notebooks_dir}")
    if "run_dir" in overrides:
        raise CliError("give the run directory as --run-dir DIR, not -p run_dir")
    if args.workers is not None and args.workers < 0:
        raise CliError(f"--workers: must be 0 or more, got {args.workers}")
    run_dir_given = {"run_dir": str(args.run_dir)} if args.run_dir else {}
    try:
        config = RunConfig.from_params(**{k: v for k, v in {**overrides, **run_dir_given}.items()
                                          if k in parameter_names()})
    except ConfigError as error:
        raise CliError(str(error)) from None
    declared = {path: notebook_parameters(path) for path in notebooks}
    known = set().union(*(set(p) for p in declared.values()))
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise CliError(_unknown_message(unknown, sorted(known)).replace("valid parameters:",
                                                                        "the selected notebooks declare:"))
    try:
        for path in notebooks:  # each notebook checks the values it declares
            if has_recipe(path.stem):
                notebook_params(path.stem, {**overrides, **run_dir_given})
    except ConfigError as error:
        raise CliError(str(error)) from None
    run_dir = (args.run_dir or Path("runs") / f"{config.scale}-seed{config.seed}").expanduser().resolve()
    return notebooks, overrides, config, run_dir, declared


def _plan(notebooks: list[Path], overrides: dict[str, Any], config: Any, run_dir: Path, workers: int | None,
          quiet: bool = False, pending: list | None = None):
    """The plan of ``notebooks`` (printed unless ``quiet``) and the number of workers to build it with;
    ``pending`` receives the notebooks whose plans wait for data (:class:`mdrl_lib.plan.Pending`)."""
    from mdrl_lib import plan as planning

    workers = planning.default_workers(config.scale) if workers is None else workers
    pending = [] if pending is None else pending
    nodes = planning.plan_notebooks(notebooks, {**overrides, "run_dir": str(run_dir)}, pending)
    if not quiet:
        print(planning.format_plan(nodes, config.scale, max(workers, 1), pending), flush=True)
    return nodes, workers


def _log(line: str) -> None:
    print(line, flush=True)


def plan(args: argparse.Namespace) -> int:
    from mdrl_lib import plan as planning

    notebooks, overrides, config, run_dir, _ = _selection(args)
    if not args.quiet:
        print(f"run directory: {run_dir}")
    pending: list = []
    nodes, workers = _plan(notebooks, overrides, config, run_dir, args.workers, quiet=args.quiet, pending=pending)
    if args.build and workers > 0 and any(not n.stored for n in nodes.values()):
        start = time.perf_counter()
        if not args.quiet:
            print(f"building with {workers} worker(s) ...", flush=True)
        overrides_here = {**overrides, "run_dir": str(run_dir)}
        try:
            planning.build_in_rounds(lambda found: planning.plan_notebooks(notebooks, overrides_here, found),
                                     workers, log=_log)
        except RuntimeError as error:
            raise CliError(str(error)) from None
        print(f"built in {time.perf_counter() - start:.0f} s", flush=True)
    return 0


def run(args: argparse.Namespace) -> int:
    from mdrl_lib import plan as planning

    notebooks, overrides, config, run_dir, declared = _selection(args)
    out_dir = run_dir / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"run directory: {run_dir}")
    start = time.perf_counter()
    builder = None
    if args.workers != 0:  # the workers build ahead; each notebook starts once its own artifacts are in
        pending: list = []
        nodes, workers = _plan(notebooks, overrides, config, run_dir, args.workers, pending=pending)
        if any(not n.stored for n in nodes.values()):
            print(f"building with {workers} worker(s) while the notebooks run ...", flush=True)
            command = [sys.executable, "-m", "mdrl_lib", "--notebooks-dir", str(args.notebooks_dir), "plan", "--build",
                       "--quiet", "--run-dir", str(run_dir), "--workers", str(workers),
                       "--only", *[p.stem for p in notebooks]]
            for name, value in args.parameter:
                command += ["-p", name, value]
            overrides_here = {**overrides, "run_dir": str(run_dir)}
            builder = planning.BuildProcess(
                nodes, command, run_dir / "store", pending=[n for n, _ in pending],
                replan=lambda stem: planning.plan_notebooks([p for p in notebooks if p.stem == stem], overrides_here))
    try:
        for path in notebooks:
            if builder is not None:
                builder.wait_for(path.stem)
            params = {k: v for k, v in overrides.items() if k in declared[path]}
            if "run_dir" in declared[path]:
                params["run_dir"] = str(run_dir)
            _execute(path, out_dir, params, run_dir, args.log_output)
        if builder is not None:
            builder.join()
    except RuntimeError as error:
        raise CliError(str(error)) from None
    finally:
        if builder is not None and builder.process.poll() is None:  # a notebook failed: stop building for it
            builder.process.terminate()
            builder.process.wait()
    print(f"all {len(notebooks)} notebook(s) done in {time.perf_counter() - start:.0f} s")
    if (run_dir / "claims").is_dir():
        print()
        print(format_ledger(run_dir))
    return 0


def replicate_command(args: argparse.Namespace) -> int:
    """``replicate``: check everything, run the seeds not done yet, then write the reference ledger and, beside
    it, the seeds' wall times (``<ledger>-costs.json``). A failed seed makes it exit 1 after the others ran."""
    from mdrl_lib import reference as ref
    from mdrl_lib.claims.rules import RULES_VERSION
    from mdrl_lib.replicate import ReplicateError, check_reference_seeds, done_record, parse_seeds, replicate

    try:
        seeds = parse_seeds(args.seeds)
        check_reference_seeds(seeds)
        used = ref.seeds_of_other_versions()
        if any(seed in used for seed in seeds):
            raise ReplicateError("a new rules version runs on new seeds; already used by an earlier reference: "
                                 + ", ".join(f"{s} (version {used[s]})" for s in seeds if s in used))
        if any(name in ("seed", "scale") for name, _ in args.parameter):
            raise ReplicateError("-p seed and -p scale: replicate sets them itself (toy scale, one run per seed)")
        _selection(argparse.Namespace(parameter=[["scale", "toy"], ["seed", str(seeds[0])], *args.parameter],
                                      only=args.only, run_dir=None, workers=None, notebooks_dir=args.notebooks_dir))
        root = (args.root or Path("runs") / f"reference-v{RULES_VERSION}").expanduser().resolve()
        partial = bool(args.only or args.parameter)
        out = args.out or (root / "ledger.json" if partial else ref.reference_path())
        min_seeds = ref.rule("reference", "min_seeds") if args.min_seeds is None else args.min_seeds
        if min_seeds < 1:
            raise ReplicateError(f"--min-seeds: must be 1 or more, got {min_seeds}")
        if len(seeds) < min_seeds:
            raise ReplicateError(f"--seeds gives {len(seeds)} seed(s), fewer than the {min_seeds} a ledger needs; "
                                 "give more seeds or a smaller --min-seeds (a quick check, not a reference)")
        records = replicate(seeds, root, workers=args.workers, params=[tuple(p) for p in args.parameter],
                            only=args.only, echo=_log)
    except ReplicateError as error:
        raise CliError(str(error)) from None
    failed = [r["seed"] for r in records if r is None or r.get("returncode") != 0]
    if failed:
        raise CliError(f"seed(s) {', '.join(map(str, failed))} failed (see their logs under {root}); rerun the same "
                       "command to resume them")
    command = "python -m mdrl_lib replicate --seeds " + args.seeds + f" --workers {args.workers}" + "".join(
        f" -p {n} {v}" for n, v in args.parameter) + (f" --only {' '.join(args.only)}" if args.only else "")
    try:
        reference = ref.build_reference(root, seeds, command=command, min_seeds=min_seeds)
    except ValueError as error:
        raise CliError(str(error)) from None
    ref.write_reference(reference, out)
    costs = {"seeds": {str(s): done_record(root, s)["wall_s"] for s in seeds}, "workers": args.workers}
    costs["total_wall_s"] = round(sum(costs["seeds"].values()), 1)
    ref.write_reference(costs, out.with_name(out.stem + "-costs.json"))
    print(ref.reference_table(reference).to_string(index=False))
    print(f"reference ledger: {out} ({len(reference['included'])} seeds included, {len(reference['excluded'])} excluded)")
    return 0


def _execute(path: Path, out_dir: Path, params: dict[str, Any], cwd: Path, log_output: bool) -> None:
    import papermill
    from papermill.exceptions import PapermillExecutionError

    partial = out_dir / f"{path.stem}.part.ipynb"
    failed = out_dir / f"{path.stem}.FAILED.ipynb"
    final = out_dir / path.name
    for stale in (partial, failed):
        stale.unlink(missing_ok=True)
    start = time.perf_counter()
    print(f"running {path.name} ...", flush=True)
    try:
        papermill.execute_notebook(str(path), str(partial), parameters=params, kernel_name="python3",
                                   cwd=str(cwd), progress_bar=False, log_output=log_output)
    except PapermillExecutionError as error:
        os.replace(partial, failed)
        raise CliError(f"notebook {path.name} failed in cell {error.cell_index} (In [{error.exec_count}]): "
                       f"{error.ename}: {error.evalue}; the executed copy is {failed}") from None
    except Exception:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, final)
    print(f"  done in {time.perf_counter() - start:.1f} s -> {final}", flush=True)


def format_ledger(run_dir: Path) -> str:
    """The claims ledger of ``run_dir`` as text: one block per check, claim order."""
    from mdrl_lib.claims import ledger
    from mdrl_lib.claims.record import verdict_counts

    try:
        table = ledger(run_dir)
    except FileNotFoundError as error:
        raise CliError(str(error)) from None
    lines = [f"Claims ledger of {run_dir}"]
    for row in table.to_dict("records"):
        head = f"{row['claim']} {row['check']}".strip() + (f" [{row['regime']}]" if row.get("regime") else "")
        lines.append(f"\n{head}: {row['verdict'].upper()}" + (f"  ({row['notebook']})" if row["notebook"] else ""))
        for label in ("paper", "this run", "baseline / control", "premises", "tested", "caveats", "why"):
            if row[label]:
                lines.append(f"  {label}: {row[label]}")
    versions = sorted({v for v in table["rules"] if v})
    lines.append("\n" + ", ".join(f"{n} {verdict}" for verdict, n in verdict_counts(table).items())
                 + (f" (rules version {', '.join(versions)})" if versions else ""))
    lines += ["", format_beside_reference(run_dir)]
    return "\n".join(lines)


def format_beside_reference(run_dir: Path) -> str:
    """This run's verdicts beside the reference's over fresh seeds, one line per check, with whether this run's
    effect is typical of the seeds; a line saying why when there is no reference for these rules."""
    from mdrl_lib.claims.record import CLAIM_IDS, KIT_CLAIM_IDS
    from mdrl_lib.reference import beside_reference

    beside = beside_reference(run_dir, [*CLAIM_IDS, *KIT_CLAIM_IDS])
    if beside.table is None:
        return beside.message
    width = max(len(c) for c in beside.table["check"])
    lines = ["This run beside the reference over fresh seeds", beside.message, "",
             f"  {'check':<{width}}  {'this run':<25} {'reference':<25} effect vs the seeds' range"]
    for row in beside.table.to_dict("records"):
        effect, spread = row["this run's effect"], row["seeds' range"]
        shown = "-" if effect is None else f"{row['effect']} {effect:.3g} ({row['typical?']}: {spread})"
        lines.append(f"  {row['check']:<{width}}  {row['this run']:<25} {row['reference']:<25} {shown}")
    return "\n".join(lines)

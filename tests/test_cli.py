import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from mdrl_lib.cli import main, parse_value


def _notebook(path: Path, parameters: str, body: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, str(path))
    return path


@pytest.fixture
def notebooks(tmp_path):
    folder = tmp_path / "nbs"
    folder.mkdir()
    _notebook(folder / "00_first.ipynb", 'seed: int = 0  # the seed\nrun_dir: str = ""  # where to write\n'
                                         'examples_per_domain: int = 3  # shown',
              "from pathlib import Path\nPath(run_dir, f'seed{seed}.txt').write_text(str(seed))")
    _notebook(folder / "01_second.ipynb", "rl_steps: int = 2  # how many",
              "assert rl_steps != 7, 'seven steps is unlucky'")
    return folder


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "run" in out and "params" in out


def test_params_lists_types_and_help(notebooks, capsys):
    assert main(["--notebooks-dir", str(notebooks), "params", "00"]) == 0
    out = capsys.readouterr().out
    assert "seed" in out and "int" in out and "the seed" in out


def test_run_passes_overrides_and_writes_executed_notebooks(notebooks, tmp_path):
    run_dir = tmp_path / "run"
    assert main(["--notebooks-dir", str(notebooks), "run", "--run-dir", str(run_dir),
                 "-p", "seed", "3", "-p", "rl_steps", "5"]) == 0
    assert (run_dir / "seed3.txt").read_text() == "3"
    executed = sorted(p.name for p in (run_dir / "notebooks").iterdir())
    assert executed == ["00_first.ipynb", "01_second.ipynb"]
    cells = json.loads((run_dir / "notebooks" / "01_second.ipynb").read_text())["cells"]
    assert any("rl_steps = 5" in "".join(c["source"]) for c in cells)


def test_failing_notebook_exits_nonzero_naming_notebook_and_cell(notebooks, tmp_path, capsys):
    code = main(["--notebooks-dir", str(notebooks), "run", "--run-dir", str(tmp_path / "run"),
                 "-p", "rl_steps", "7"])
    assert code != 0
    err = capsys.readouterr().err
    assert "01_second.ipynb" in err and "cell" in err and "seven steps is unlucky" in err
    assert (tmp_path / "run" / "notebooks" / "01_second.FAILED.ipynb").is_file()
    assert not (tmp_path / "run" / "notebooks" / "01_second.ipynb").exists()


def test_unknown_parameter_is_an_error_before_running(notebooks, tmp_path, capsys):
    code = main(["--notebooks-dir", str(notebooks), "run", "--run-dir", str(tmp_path / "run"), "-p", "sead", "1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "'sead'" in err and "seed" in err
    assert not (tmp_path / "run" / "notebooks").exists() or not any((tmp_path / "run" / "notebooks").iterdir())


def test_bad_config_value_is_an_error_before_running(notebooks, tmp_path, capsys):
    assert main(["--notebooks-dir", str(notebooks), "run", "--run-dir", str(tmp_path / "r"), "-p", "seed", "-4"]) == 2
    assert "seed" in capsys.readouterr().err


def test_unknown_notebook_names_the_valid_ones(notebooks, capsys):
    assert main(["--notebooks-dir", str(notebooks), "params", "07"]) == 2
    assert "00_first" in capsys.readouterr().err


def test_values_are_parsed_like_papermill():
    assert parse_value("3") == 3 and parse_value("1e-3") == 0.001 and parse_value("code,math") == "code,math"


def test_module_entry_point_prints_help():
    done = subprocess.run([sys.executable, "-m", "mdrl_lib", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "papermill" in done.stdout


@pytest.mark.parametrize("flags, fragment", [
    (["-p", "rl_steps", "0"], "rl_steps: expected an integer >= 1"),
    (["-p", "seed", "-2"], "seed: expected an integer >= 0"),
    (["-p", "run_dir", "x"], "--run-dir"),
])
def test_every_declared_parameter_is_checked_before_running(notebooks, tmp_path, capsys, flags, fragment):
    assert main(["--notebooks-dir", str(notebooks), "run", "--run-dir", str(tmp_path / "r"), *flags]) == 2
    err = capsys.readouterr().err
    assert fragment in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "r" / "notebooks").exists()


def test_a_run_dir_that_is_a_file_is_refused_before_running(notebooks, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["--notebooks-dir", str(notebooks), "run", "--run-dir", str(afile)]) == 2
    assert "run_dir" in capsys.readouterr().err and afile.read_text() == "x"


def test_run_ends_with_the_claims_ledger_of_its_run_directory(tmp_path, capsys):
    folder = tmp_path / "nbs"
    folder.mkdir()
    _notebook(folder / "00_claims.ipynb", 'run_dir: str = ""  # where to write',
              "from mdrl_lib.claims import ClaimCheck, record_check\n"
              "record_check(run_dir, ClaimCheck('C1', 'sparse-demo', 'edits are sparse', '36-92%', "
              "'50% unchanged', 'random 10%', True, 'above the random line'))")
    assert main(["--notebooks-dir", str(folder), "run", "--run-dir", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "all 1 notebook(s) done" in out
    ledger = out[out.index("Claims ledger"):]
    assert "C1 sparse-demo: SUPPORTED" in ledger and "random 10%" in ledger


def test_plan_lists_what_the_notebooks_need_without_building(tmp_path, capsys):
    assert main(["plan", "--run-dir", str(tmp_path / "run"), "--only", "00", "01"]) == 0
    out = capsys.readouterr().out
    assert "to build" in out and "base > math (rl_seed=1)" in out and "worker(s)" in out
    assert not (tmp_path / "run" / "store").exists() or not any((tmp_path / "run" / "store").glob("*/manifest.json"))
    assert main(["plan", "--run-dir", str(tmp_path / "run"), "--workers", "-2"]) == 2
    assert "--workers" in capsys.readouterr().err

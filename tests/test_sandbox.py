"""The sandbox for generated programs (mdrl_lib.sandbox): normal programs work, hostile ones fail and the host is unharmed."""
from __future__ import annotations

import ast
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import pytest

from mdrl_lib.sandbox import SANDBOX_UID_BASE, run_python, run_tests, fraction_passed

AS_ROOT = os.geteuid() == 0 and sys.platform.startswith("linux")
root_only = pytest.mark.skipif(not AS_ROOT, reason="needs root on Linux")

LIMITS = {"timeout_s": 2.0, "memory_mb": 256, "max_processes": 8}
ADD = "a, b = map(int, input().split())\nprint(a + b)\n"
ADD_TESTS = [
    {"input": "1 2\n", "output": "3"},
    {"input": "10 -4\n", "output": "6\n"},
    {"input": "0 0", "output": " 0 "},
    {"input": "7 8\n", "output": "15"},
]


def sandbox_processes() -> list[int]:
    """Pids of live or zombie processes that run as a sandbox uid."""
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}").st_uid >= SANDBOX_UID_BASE:
                    pids.append(int(name))
            except FileNotFoundError:
                pass
    return pids


def assert_host_fine() -> None:
    """The host can still start processes, and (as root on Linux) no sandbox process is left over."""
    assert subprocess.run(["true"], timeout=10).returncode == 0
    if AS_ROOT:
        deadline = time.monotonic() + 1.0
        while sandbox_processes() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sandbox_processes() == []


# ----------------------------------------------------------------------------- normal programs


def test_hello_world():
    result = run_python("print('hello, world')", **LIMITS)
    assert result.ok
    assert (result.returncode, result.stdout, result.stderr) == (0, "hello, world\n", "")
    assert not result.timed_out and not result.output_truncated
    assert 0 < result.seconds < 2


def test_stdin_is_fed_to_the_program():
    result = run_python("import sys\nsys.stdout.write(sys.stdin.read().upper())", stdin="line one\nline two\n", **LIMITS)
    assert result.ok and result.stdout == "LINE ONE\nLINE TWO\n"


def test_large_stdin_and_stdout_round_trip():
    data = "".join(f"{i}\n" for i in range(20000))
    result = run_python("import sys\nsys.stdout.write(sys.stdin.read())", stdin=data, max_output_bytes=1 << 20, timeout_s=5)
    assert result.ok and result.stdout == data


def test_exit_status_and_stderr_are_reported():
    result = run_python("import sys\nprint('oops', file=sys.stderr)\nsys.exit(3)", **LIMITS)
    assert not result.ok
    assert result.returncode == 3 and result.stderr == "oops\n"


def test_working_directory_is_fresh_private_and_writable():
    program = "import os\nopen('scratch.txt', 'w').write('x')\nprint(sorted(os.listdir('.')), os.stat('.').st_mode & 0o777)"
    first, second = run_python(program, **LIMITS), run_python(program, **LIMITS)
    assert first.ok and first.stdout == second.stdout == "['main.py', 'scratch.txt'] 448\n"


def test_resource_limits_are_applied():
    program = (
        "import resource as r\n"
        "for name in ('RLIMIT_CPU', 'RLIMIT_AS', 'RLIMIT_FSIZE', 'RLIMIT_CORE'):\n"
        "    print(name, *r.getrlimit(getattr(r, name)))\n"
    )
    result = run_python(program, timeout_s=2.0, memory_mb=200)
    assert result.ok
    limits = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()}
    assert limits["RLIMIT_CPU"] == ["2", "3"]
    assert limits["RLIMIT_AS"] == [str(200 << 20)] * 2
    assert limits["RLIMIT_CORE"] == ["0", "0"]
    assert int(limits["RLIMIT_FSIZE"][0]) <= 16 << 20


def test_run_tests_and_fraction_passed_correct_program():
    assert run_tests(ADD, ADD_TESTS, **LIMITS) == [True] * 4
    assert fraction_passed(ADD, ADD_TESTS, **LIMITS) == 1.0


def test_run_tests_and_fraction_passed_partially_correct_program():
    partial = "a, b = map(int, input().split())\nprint(a + b if a < 5 else a * b)\n"
    assert run_tests(partial, ADD_TESTS, **LIMITS) == [True, False, True, False]
    assert fraction_passed(partial, ADD_TESTS, **LIMITS) == 0.5


def test_run_tests_and_fraction_passed_crashing_program():
    crashing = "print(3)\nraise ValueError('boom')\n"
    assert run_tests(crashing, ADD_TESTS, **LIMITS) == [False] * 4
    assert fraction_passed(crashing, ADD_TESTS, **LIMITS) == 0.0
    assert fraction_passed("syntax error here", ADD_TESTS, **LIMITS) == 0.0


def test_fraction_passed_without_tests_is_zero():
    assert fraction_passed(ADD, []) == 0.0
    assert run_tests(ADD, []) == []


# ----------------------------------------------------------------------------- hostile programs


def test_infinite_loop_times_out():
    start = time.monotonic()
    result = run_python("while True:\n    pass\n", timeout_s=1.0)
    assert time.monotonic() - start < 3.0
    assert result.timed_out and result.returncode is None and not result.ok
    assert_host_fine()


def test_memory_bomb_fails():
    result = run_python("blocks = []\nwhile True:\n    blocks.append(bytearray(1 << 24))\n", timeout_s=2.0, memory_mb=128)
    assert not result.ok and not result.timed_out
    assert "MemoryError" in result.stderr
    assert_host_fine()


def test_fork_bomb_is_contained():
    bomb = (
        "import os\n"
        "while True:\n"
        "    try:\n"
        "        if os.fork() == 0:\n"
        "            os.setsid()\n"
        "    except OSError:\n"
        "        pass\n"
    )
    start = time.monotonic()
    result = run_python(bomb, timeout_s=1.0, max_processes=8)
    assert time.monotonic() - start < 4.0
    assert not result.ok
    assert_host_fine()


def test_program_cannot_write_outside_its_directory(tmp_path):
    name = f"mdrl-escape-{uuid.uuid4().hex}"
    targets = [os.path.join("/tmp", name), str(tmp_path / name), os.path.join("..", name)]
    program = (
        f"for path in {targets!r}:\n"
        "    try:\n"
        "        open(path, 'w').write('pwned')\n"
        "    except OSError as exc:\n"
        "        print('refused', path, type(exc).__name__)\n"
    )
    result = run_python(program, **LIMITS)
    assert result.returncode == 0
    for path in ("/tmp", str(tmp_path), tempfile.gettempdir()):
        assert name not in os.listdir(path)


def test_program_cannot_delete_files_outside_its_directory(tmp_path):
    victims = [tmp_path / "keep.txt", tmp_path.parent / f"mdrl-keep-{uuid.uuid4().hex}.txt"]
    for victim in victims:
        victim.write_text("precious")
    program = (
        "import os, shutil\n"
        f"for path in {[str(v) for v in victims]!r}:\n"
        "    for remove in (os.remove, shutil.rmtree):\n"
        "        try:\n"
        "            remove(path)\n"
        "        except OSError as exc:\n"
        "            print('refused', path, type(exc).__name__)\n"
    )
    try:
        result = run_python(program, **LIMITS)
        assert result.returncode == 0
        assert all(victim.read_text() == "precious" for victim in victims)
    finally:
        victims[1].unlink(missing_ok=True)


def test_parent_environment_is_not_inherited(monkeypatch):
    monkeypatch.setenv("MDRL_SECRET", "hunter2-do-not-leak")
    result = run_python("import os\nprint(dict(os.environ))", **LIMITS)
    assert result.ok
    assert "MDRL_SECRET" not in result.stdout and "hunter2" not in result.stdout
    assert set(ast.literal_eval(result.stdout)) <= {"PATH", "LANG"}


@root_only
def test_parent_environ_files_are_unreadable(monkeypatch):
    monkeypatch.setenv("MDRL_SECRET", "hunter2-do-not-leak")
    program = (
        f"for pid in (__import__('os').getppid(), {os.getpid()}, {os.getppid()}):\n"
        "    try:\n"
        "        print(open(f'/proc/{pid}/environ', 'rb').read())\n"
        "    except OSError as exc:\n"
        "        print('refused', pid, type(exc).__name__)\n"
    )
    result = run_python(program, **LIMITS)
    assert result.ok
    assert "hunter2" not in result.stdout
    assert result.stdout.count("refused") == 3


def test_printing_gigabytes_is_truncated():
    start = time.monotonic()
    result = run_python("import sys\nline = 'x' * 65535 + '\\n'\nwhile True:\n    sys.stdout.write(line)\n", timeout_s=2.0, max_output_bytes=10_000)
    assert time.monotonic() - start < 3.0
    assert result.output_truncated and not result.ok
    assert result.stdout == "x" * 10_000
    assert_host_fine()


def test_writing_a_huge_file_is_stopped():
    program = (
        "try:\n"
        "    with open('big.bin', 'wb') as f:\n"
        "        for _ in range(64):\n"
        "            f.write(bytes(1 << 20))\n"
        "except OSError as exc:\n"
        "    print('refused', type(exc).__name__)\n"
    )
    result = run_python(program, **LIMITS)
    assert result.ok and result.stdout.startswith("refused")


def test_killing_the_parent_does_not_reach_the_host():
    program = (
        "import os, signal\n"
        "for attempt in (lambda: os.kill(os.getppid(), signal.SIGKILL),\n"
        "                lambda: os.killpg(os.getpgid(os.getppid()), signal.SIGKILL),\n"
        "                lambda: os.killpg(os.getpgid(0), signal.SIGKILL)):\n"
        "    try:\n"
        "        attempt()\n"
        "    except OSError as exc:\n"
        "        print('refused', type(exc).__name__)\n"
    )
    result = run_python(program, **LIMITS)
    assert not result.timed_out
    os.kill(os.getpid(), 0)
    assert_host_fine()
    assert run_python("print('still working')", **LIMITS).stdout == "still working\n"


@root_only
def test_killing_host_processes_by_pid_is_refused():
    program = (
        "import os, signal\n"
        f"for pid in ({os.getpid()}, {os.getppid()}, 1):\n"
        "    try:\n"
        "        os.kill(pid, signal.SIGKILL)\n"
        "        print('killed', pid)\n"
        "    except OSError as exc:\n"
        "        print('refused', pid, type(exc).__name__)\n"
        f"try:\n    os.killpg({os.getpgid(0)}, signal.SIGKILL)\nexcept OSError as exc:\n    print('refused pgid')\n"
    )
    result = run_python(program, **LIMITS)
    assert result.ok
    assert result.stdout.count("refused") == 4 and "killed" not in result.stdout


@root_only
def test_network_is_unreachable():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        port = server.getsockname()[1]
        program = (
            "import socket\n"
            "try:\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=0.5)\n"
            "    print('connected')\n"
            "except OSError as exc:\n"
            "    print('refused', type(exc).__name__)\n"
        )
        result = run_python(program, **LIMITS)
        assert result.ok and result.stdout.startswith("refused")
        with pytest.raises(BlockingIOError):
            server.accept()


def test_interpreter_reached_through_a_link_under_tmp(tmp_path, monkeypatch):
    # A venv in /tmp (as in a CI clone) links to the real interpreter; /tmp is masked in the sandbox.
    link = tmp_path / "python"
    link.symlink_to(os.path.realpath(sys.executable))
    monkeypatch.setattr(sys, "executable", str(link))
    result = run_python("print(6 * 7)", timeout_s=5)
    assert result.ok and result.stdout.strip() == "42"

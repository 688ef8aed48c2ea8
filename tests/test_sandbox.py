"""The sandbox for generated programs (mdrl_lib.sandbox): normal programs work; hostile ones fail,
in every way of running the kit (root, root without CAP_SYS_ADMIN, an unprivileged user, with and
without user namespaces), and the host is unharmed; where the sandbox cannot isolate it refuses,
saying what is missing; a program cannot fake passing an assert-based test."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from mdrl_lib import sandbox
from mdrl_lib.domains.sources import FUNCTIONAL_PASS_MARK
from mdrl_lib.sandbox import (
    ISOLATIONS,
    SandboxError,
    fraction_passed,
    functional_fraction_passed,
    isolation,
    run_functional,
    run_python,
    run_tests,
)

LINUX = sys.platform.startswith("linux")
AS_ROOT = LINUX and os.geteuid() == 0
pytestmark = pytest.mark.skipif(not LINUX, reason="the sandbox isolates with Linux namespaces")

LIMITS = {"timeout_s": 3.0, "memory_mb": 256, "max_processes": 8}
ADD = "a, b = map(int, input().split())\nprint(a + b)\n"
ADD_TESTS = [
    {"input": "1 2\n", "output": "3"},
    {"input": "10 -4\n", "output": "6\n"},
    {"input": "0 0", "output": " 0 "},
    {"input": "7 8\n", "output": "15"},
]


def can_isolate() -> bool:
    try:
        isolation()
    except SandboxError:
        return False
    return True


needs_isolation = pytest.mark.skipif(LINUX and not can_isolate(), reason="this machine cannot isolate programs")


# ----------------------------------------------------------------------------- normal programs


@needs_isolation
def test_hello_world():
    result = run_python("print('hello, world')", **LIMITS)
    assert result.ok
    assert (result.returncode, result.stdout, result.stderr) == (0, "hello, world\n", "")
    assert not result.timed_out and not result.output_truncated
    assert 0 < result.seconds < 3
    assert isolation() in ISOLATIONS


@needs_isolation
def test_stdin_is_fed_to_the_program():
    result = run_python("import sys\nsys.stdout.write(sys.stdin.read().upper())", stdin="line one\nline two\n", **LIMITS)
    assert result.ok and result.stdout == "LINE ONE\nLINE TWO\n"


@needs_isolation
def test_large_stdin_and_stdout_round_trip():
    data = "".join(f"{i}\n" for i in range(20000))
    result = run_python("import sys\nsys.stdout.write(sys.stdin.read())", stdin=data, max_output_bytes=1 << 20, timeout_s=5)
    assert result.ok and result.stdout == data


@needs_isolation
def test_exit_status_signal_and_stderr_are_reported():
    result = run_python("import sys\nprint('oops', file=sys.stderr)\nsys.exit(3)", **LIMITS)
    assert not result.ok
    assert result.returncode == 3 and result.stderr == "oops\n"
    killed = run_python("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)", **LIMITS)
    assert killed.returncode == -signal.SIGSEGV and not killed.timed_out


@needs_isolation
def test_working_directory_is_fresh_private_and_writable():
    program = "import os\nopen('scratch.txt', 'w').write('x')\nprint(sorted(os.listdir('.')), os.stat('.').st_mode & 0o777)"
    first, second = run_python(program, **LIMITS), run_python(program, **LIMITS)
    assert first.ok and first.stdout == second.stdout == "['main.py', 'scratch.txt'] 448\n"


@needs_isolation
def test_work_directories_are_named_after_the_creating_process_and_removed():
    result = run_python("import os\nprint(os.getcwd())", **LIMITS)
    workdir = result.stdout.strip()
    assert os.path.dirname(workdir) == tempfile.gettempdir()
    assert re.fullmatch(rf"mdrl-sandbox-{os.getpid()}-\w+", os.path.basename(workdir)), workdir
    assert not os.path.exists(workdir)


@needs_isolation
def test_resource_limits_are_applied():
    program = (
        "import resource as r\n"
        "for name in ('RLIMIT_CPU', 'RLIMIT_AS', 'RLIMIT_FSIZE', 'RLIMIT_CORE', 'RLIMIT_NPROC'):\n"
        "    print(name, *r.getrlimit(getattr(r, name)))\n"
    )
    result = run_python(program, timeout_s=2.0, memory_mb=200)
    assert result.ok
    limits = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()}
    assert limits["RLIMIT_CPU"] == ["2", "3"]
    assert limits["RLIMIT_AS"] == [str(200 << 20)] * 2
    assert limits["RLIMIT_CORE"] == ["0", "0"]
    assert int(limits["RLIMIT_FSIZE"][0]) <= 16 << 20


@needs_isolation
@pytest.mark.parametrize("kind", ["processes", "threads"])
def test_max_processes_counts_the_program_itself_and_every_task(kind):
    spawn = (
        "        if os.fork() == 0:\n            time.sleep(3)\n            os._exit(0)\n"
        if kind == "processes"
        else "        threading.Thread(target=time.sleep, args=(3,), daemon=True).start()\n"
    )
    program = f"import os, threading, time\nn = 1\ntry:\n    while n < 50:\n{spawn}        n += 1\nexcept Exception:\n    pass\nprint(n)\n"
    for limit in (1, 5):
        result = run_python(program, timeout_s=5.0, max_processes=limit)
        assert result.stdout.strip() == str(limit), result


@needs_isolation
def test_what_the_program_sees():
    program = (
        "import ctypes, os, socket\n"
        "status = dict(line.split(':', 1) for line in open('/proc/self/status'))\n"
        "print(sorted(os.listdir('/')))\n"
        "print(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))\n"
        "print([status[k].strip() for k in ('CapEff', 'CapPrm', 'CapBnd', 'NoNewPrivs')])\n"
        "print(ctypes.CDLL(None, use_errno=True).unshare(0x10000000))\n"
        "print(sorted(name for _, name in socket.if_nameindex()))\n"
    )
    result = run_python(program, **LIMITS)
    assert result.ok, result
    root, pids, capabilities, unshare, interfaces = result.stdout.splitlines()
    assert set(eval(root)) <= {"usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc", "dev", "proc", "tmp",
                               "var", "root", "home", "opt", "work", "nix", "snap", ".mdrl"}
    assert len(eval(pids)) <= 3  # its own processes: init (and bubblewrap's) and itself
    assert eval(capabilities) == ["0" * 16, "0" * 16, "0" * 16, "1"]
    assert unshare == "-1"  # no further user namespaces
    assert eval(interfaces) == ["lo"]


@needs_isolation
def test_interpreter_reached_through_a_link_under_tmp(tmp_path, monkeypatch):
    # A venv in /tmp (as in a CI clone) links to the real interpreter; the sandbox has its own /tmp.
    link = tmp_path / "python"
    link.symlink_to(os.path.realpath(sys.executable))
    monkeypatch.setattr(sys, "executable", str(link))
    result = run_python("print(6 * 7)", timeout_s=5)
    assert result.ok and result.stdout.strip() == "42"


@needs_isolation
def test_run_tests_and_fraction_passed_correct_program():
    assert run_tests(ADD, ADD_TESTS, **LIMITS) == [True] * 4
    assert fraction_passed(ADD, ADD_TESTS, **LIMITS) == 1.0


@needs_isolation
def test_run_tests_and_fraction_passed_partially_correct_program():
    partial = "a, b = map(int, input().split())\nprint(a + b if a < 5 else a * b)\n"
    assert run_tests(partial, ADD_TESTS, **LIMITS) == [True, False, True, False]
    assert fraction_passed(partial, ADD_TESTS, **LIMITS) == 0.5


@needs_isolation
def test_run_tests_and_fraction_passed_crashing_program():
    crashing = "print(3)\nraise ValueError('boom')\n"
    assert run_tests(crashing, ADD_TESTS[:2], **LIMITS) == [False] * 2
    assert fraction_passed("syntax error here", ADD_TESTS[:2], **LIMITS) == 0.0


def test_isolation_or_a_clear_refusal(tmp_path):
    marker = tmp_path / "ran"
    try:
        method = isolation()
    except SandboxError as exc:
        message = str(exc)
        assert "user-namespaces" in message and "bubblewrap" in message and "runs none of them" in message
        with pytest.raises(SandboxError, match="cannot isolate"):
            run_python(f"open({str(marker)!r}, 'w').write('ran')")
        assert not marker.exists()
    else:
        assert method in ISOLATIONS
        assert method != "bubblewrap" or os.geteuid() != 0


def test_fraction_passed_without_tests_is_zero():
    assert fraction_passed(ADD, []) == 0.0
    assert run_tests(ADD, []) == []
    assert functional_fraction_passed(ADD, []) == 0.0


# ----------------------------------------------------------------------------- assert-based tests

SOLUTION = "class Solution:\n    def add(self, a, b):\n        print('debug')\n        return a + b\n"


@needs_isolation
def test_functional_tests_judge_the_programs_functions():
    assert run_functional(SOLUTION, "assert Solution().add(1, 2) == 3").passed
    failed = run_functional(SOLUTION, "assert Solution().add(1, 2) == 4")
    assert not failed.passed and failed.reason.startswith("AssertionError")
    checker = "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(a=2, b=-2) == 0\ncheck(Solution().add)\n"
    assert run_functional(SOLUTION, checker).passed
    in_function = "def check():\n    s = Solution()\n    assert [s.add(i, i) for i in range(3)] == [0, 2, 4]\ncheck()\n"
    assert run_functional(SOLUTION, in_function).passed
    assert functional_fraction_passed(SOLUTION, ["assert Solution().add(1, 1) == 2", "assert Solution().add(1, 1) == 3"]) == 0.5


@needs_isolation
def test_functional_values_cross_as_plain_data_and_objects_as_references():
    program = (
        "import math\n"
        "def values():\n    return [1, (2, 3.5), {'a': {4}}, b'x', None, True, 10**30, -0.0, 1j, frozenset({1})]\n"
        "def nan():\n    return math.inf - math.inf\n"
        "class Node:\n    def __init__(self, val, next=None):\n        self.val, self.next = val, next\n"
        "def build(xs):\n    head = None\n    for x in reversed(xs):\n        head = Node(x, head)\n    return head\n"
        "def gen(n):\n    yield from range(n)\n"
        "class Counter:\n    def __init__(self):\n        self.n = 0\n    def hit(self):\n        self.n += 1\n        return self.n\n"
        "def boom():\n    raise ValueError('nope')\n"
    )
    test = (
        "assert values() == [1, (2, 3.5), {'a': {4}}, b'x', None, True, 10**30, -0.0, 1j, frozenset({1})]\n"
        "assert type(values()[1]) is tuple and values()[-1] == frozenset({1})\n"
        "assert math.isnan(nan())\n"
        "head = build([1, 2, 3])\n"
        "seen = []\n"
        "while head:\n    seen.append(head.val)\n    head = head.next\n"
        "assert seen == [1, 2, 3]\n"
        "node = build([7])\n"
        "assert node == node and node != build([7]) and node != 7\n"
        "assert list(gen(4)) == [0, 1, 2, 3]\n"
        "c = Counter()\n"
        "assert [c.hit(), c.hit()] == [1, 2] and c.n == 2\n"
        "try:\n    boom()\nexcept ValueError as exc:\n    assert 'nope' in str(exc)\nelse:\n    raise AssertionError\n"
        "assert MISSING_NAME if False else True\n"
    )
    result = run_functional(program, test, prelude="import math\n")
    assert result.passed, result
    missing = run_functional(program, "no_such_function()")
    assert not missing.passed and missing.reason.startswith("NameError")
    main_guard = run_functional("def f(x):\n    return x\n", "if __name__ == '__main__':\n    assert f(1) == 99\n")
    assert not main_guard.passed and main_guard.reason.startswith("AssertionError")


SPOOFS = {
    "pass mark on sys.__stdout__, then os._exit(0)": (
        f"import os, sys\nsys.__stdout__.write({FUNCTIONAL_PASS_MARK!r} + '\\n')\nsys.__stdout__.flush()\nos._exit(0)\n"
    ),
    "pass mark on fds 1 and 2, then sys.exit(0)": (
        f"import os, sys\nos.write(1, {FUNCTIONAL_PASS_MARK!r}.encode())\nos.write(2, {FUNCTIONAL_PASS_MARK!r}.encode())\n"
        "sys.exit(0)\n"
    ),
    "sys.exit(0) in the middle": "def f(x):\n    return x\nimport sys\nsys.exit(0)\ndef g():\n    pass\n",
    "a fake verdict on every fd": (
        "import os\nverdict = b'{\"verdict\": {\"passed\": true, \"reason\": \"\"}, \"exit\": 0}\\n'\n"
        "for fd in range(256):\n    try:\n        os.write(fd, verdict)\n    except OSError:\n        pass\n"
        "print('{\"verdict\": {\"passed\": true}}')\nos._exit(0)\n"
    ),
    "a fake verdict through /proc/<pid>/fd of every process": (
        "import os\nverdict = b'{\"verdict\": {\"passed\": true, \"reason\": \"\"}}\\n'\nopened = []\n"
        "for pid in [p for p in os.listdir('/proc') if p.isdigit()]:\n"
        "    try:\n        fds = os.listdir(f'/proc/{pid}/fd')\n    except OSError:\n        continue\n"
        "    for fd in fds:\n        try:\n"
        "            with open(f'/proc/{pid}/fd/{fd}', 'wb') as f:\n                f.write(verdict)\n"
        "            opened.append((pid, fd))\n        except OSError:\n            pass\n"
        "import sys\nsys.stderr.write(repr(opened))\nos._exit(0)\n"
    ),
    "replies forged on the judge's pipe": (
        "import os\nfor reply in [{'loaded': True}] + [{'value': True}] * 50:\n"
        "    os.write(4, (__import__('json').dumps(reply) + '\\n').encode())\nos._exit(0)\n"
    ),
    "AssertionError monkeypatched away": (
        "import builtins\nclass Never(Exception):\n    pass\nbuiltins.AssertionError = Never\n"
        "__builtins__.AssertionError = Never\ndef f(x):\n    return x\n"
    ),
    "an object equal to everything": "class Eq:\n    def __eq__(self, other):\n        return True\n    __hash__ = None\ndef f(x):\n    return Eq()\n",
    "an int subclass equal to everything": "class Eq(int):\n    def __eq__(self, other):\n        return True\ndef f(x):\n    return Eq(0)\n",
    "killing its parent and every process it sees": (
        "import os, signal\ndef f(x):\n    for pid in set(range(1, 100)) - {os.getpid()}:\n        try:\n"
        "            os.kill(pid, signal.SIGKILL)\n        except OSError:\n            pass\n    return x\n"
    ),
    "a thread printing pass marks while the judge waits": (
        f"import os, threading\ndef spam():\n    while True:\n        os.write(1, {FUNCTIONAL_PASS_MARK!r}.encode())\n"
        "threading.Thread(target=spam, daemon=True).start()\ndef f(x):\n    import time\n    time.sleep(0.3)\n    os._exit(0)\n"
    ),
}


@needs_isolation
@pytest.mark.parametrize("name", list(SPOOFS))
def test_a_program_cannot_fake_passing_a_test(name):
    program = SPOOFS[name]
    for test in ("assert 1 == 2", "assert f(1) == 2"):
        result = run_functional(program, test, timeout_s=3.0)
        assert not result.passed, (name, test, result)


@needs_isolation
def test_a_spoofing_program_still_passes_a_test_it_really_passes():
    # the control: the same channel does let a real pass through
    assert run_functional(SPOOFS["AssertionError monkeypatched away"], "assert f(2) == 2").passed
    if AS_ROOT:  # the judge then runs as a uid of its own, which the program cannot signal
        assert run_functional(SPOOFS["killing its parent and every process it sees"], "assert f(2) == 2").passed


# ----------------------------------------------------------------------------- hostile programs in every mode
#
# A driver script runs every hostile program through a copy of the sandbox module, as the user and
# with the capabilities of one mode; this test process observes the host from outside.

HOSTILE = [
    "infinite_loop", "memory_bomb", "fork_bomb", "write_outside", "delete_outside", "environment",
    "parent_environ", "printing_gigabytes", "huge_file", "kill_parent", "kill_host_pids", "network",
    "write_system_temp", "read_host_file", "spoofed_pass_mark",
]

DRIVER = r'''
import importlib.util, json, os, signal, subprocess, sys, time
spec = json.loads(sys.argv[1])
module = importlib.util.spec_from_file_location("sandbox_copy", spec["module"])
sandbox = importlib.util.module_from_spec(module)
sys.modules["sandbox_copy"] = sandbox
module.loader.exec_module(sandbox)
if spec.get("bwrap"):
    sandbox._bwrap_path = lambda: spec["bwrap"]
    sandbox._isolation_cache["method"] = "bubblewrap"
victim = subprocess.Popen(["sleep", "60"])
spec["targets"]["victim"] = victim.pid
spec["targets"]["driver"] = os.getpid()
results = {}
for name in spec["cases"]:
    case = spec["programs"][name]
    program = case["program"].format(**spec["targets"])
    try:
        if case.get("functional"):
            r = sandbox.run_functional(program, case["test"], **case["limits"])
            outcome = {"outcome": "ran", "passed": r.passed, "reason": r.reason, "timed_out": r.timed_out,
                       "seconds": r.seconds}
        else:
            r = sandbox.run_python(program, **case["limits"])
            outcome = {"outcome": "ran", "returncode": r.returncode, "stdout": r.stdout[-20000:],
                       "stderr": r.stderr[-2000:], "timed_out": r.timed_out, "truncated": r.output_truncated,
                       "seconds": r.seconds}
    except sandbox.SandboxError as exc:
        outcome = {"outcome": "refused", "message": str(exc)}
    results[name] = outcome
time.sleep(0.1)
descendants, stack, children = [], [os.getpid()], {}
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            children.setdefault(int(f.read().rsplit(b")", 1)[1].split()[1]), []).append(int(pid))
    except (OSError, IndexError, ValueError):
        pass
while stack:
    found = children.get(stack.pop(), [])
    descendants += found
    stack += found
victim_alive = victim.poll() is None
victim.kill()
victim.wait()
try:
    method = sandbox.isolation()
except sandbox.SandboxError:
    method = None
print(json.dumps({"results": results, "leftovers": [p for p in descendants if p != victim.pid],
                  "victim_alive": victim_alive, "isolation": method}))
'''


def hostile_programs(targets: dict) -> dict:
    """The hostile programs, with {placeholders} the driver fills in (pids, paths, ports)."""
    fast = {"timeout_s": 3.0, "memory_mb": 256, "max_processes": 8}
    attempt = (
        "def attempt(what, action):\n    try:\n        action()\n        print('DONE', what, flush=True)\n"
        "    except Exception as exc:\n        print('refused', what, type(exc).__name__, flush=True)\n"
    )
    return {
        "infinite_loop": {"program": "while True:\n    pass\n", "limits": dict(fast, timeout_s=0.5)},
        "memory_bomb": {"program": "blocks = []\nwhile True:\n    blocks.append(bytearray(1 << 24))\n",
                        "limits": dict(fast, memory_mb=96)},
        "fork_bomb": {"program": "import os\nwhile True:\n    try:\n        if os.fork() == 0:\n            os.setsid()\n"
                      "    except OSError:\n        pass\n", "limits": dict(fast, timeout_s=0.5)},
        "write_outside": {"program": attempt + "for path in ['{host_dir}/{name}', '../{name}', '/{name}', '{home}/{name}']:\n"
                          "    attempt(path, lambda: open(path, 'w').write('pwned'))\n", "limits": fast},
        "delete_outside": {"program": "import os, shutil\n" + attempt + "for path in ['{host_dir}/keep.txt', '{host_dir}']:\n"
                           "    attempt('remove ' + path, lambda: os.remove(path))\n    attempt('rmtree ' + path, lambda: shutil.rmtree(path))\n"
                           "    attempt('overwrite ' + path, lambda: open(path, 'w').write('pwned'))\n", "limits": fast},
        "environment": {"program": "import os\nprint(dict(os.environ))\n", "limits": fast},
        "parent_environ": {"program": "import os\n" + attempt + "pids = ['self', str(os.getppid()), '{driver}', '{host}', '1']\n"
                           "pids += [p for p in os.listdir('/proc') if p.isdigit()] if os.path.isdir('/proc') else []\n"
                           "for pid in pids:\n    attempt(pid, lambda: print(open(f'/proc/{{pid}}/environ', 'rb').read()))\n",
                           "limits": fast},
        "printing_gigabytes": {"program": "import sys\nline = 'x' * 65535 + '\\n'\nwhile True:\n    sys.stdout.write(line)\n",
                               "limits": dict(fast, timeout_s=2.0, max_output_bytes=10_000)},
        "huge_file": {"program": "try:\n    with open('big.bin', 'wb') as f:\n        for _ in range(64):\n"
                      "            f.write(bytes(1 << 20))\nexcept OSError as exc:\n    print('refused', type(exc).__name__)\n",
                      "limits": fast},
        "kill_parent": {"program": "import os, signal\n" + attempt
                        + "attempt('caller', lambda: os.kill({driver}, signal.SIGKILL))\n"
                        "attempt('parent', lambda: os.kill(os.getppid(), signal.SIGKILL))\n"
                        "attempt('parent group', lambda: os.killpg(os.getpgid(os.getppid()), signal.SIGKILL))\n"
                        "attempt('own group', lambda: os.killpg(os.getpgid(0), signal.SIGKILL))\n",
                        "limits": fast},
        "kill_host_pids": {"program": "import os, signal\n" + attempt
                           + "for pid in ({victim}, {host_victim}, {host}, {driver}):\n"
                           "    attempt(pid, lambda: os.kill(pid, signal.SIGKILL))\n", "limits": fast},
        "network": {"program": "import socket\n" + attempt
                    + "attempt('tcp', lambda: socket.create_connection(('127.0.0.1', {port}), timeout=0.5))\n"
                    "def unix(address):\n    s = socket.socket(socket.AF_UNIX)\n    s.settimeout(0.5)\n    s.connect(address)\n"
                    "attempt('unix', lambda: unix('{unix_path}'))\nattempt('abstract', lambda: unix('\\0{abstract}'))\n",
                    "limits": fast},
        "write_system_temp": {"program": "import os, tempfile\n" + attempt
                              + "for d in ('/tmp', '/var/tmp', '/dev/shm', tempfile.gettempdir()):\n"
                              "    attempt(d, lambda: open(os.path.join(d, '{name}'), 'w').write('pwned'))\n", "limits": fast},
        "read_host_file": {"program": attempt + "attempt('secret', lambda: print(open('{host_dir}/secret.txt').read()))\n",
                           "limits": fast},
        "spoofed_pass_mark": {"program": "import os, sys\nsys.__stdout__.write({mark!r} + '\\n')\nsys.__stdout__.flush()\n"
                              "sys.stderr.write({mark!r})\nos._exit(0)\n", "functional": True, "test": "assert 1 == 2",
                              "limits": dict(fast)},
    }


MODES = {
    # name: (wrap the driver in a user namespace that forbids further ones, setpriv arguments)
    "root": (False, []),
    "root, user namespaces disabled": (True, []),
    "root without CAP_SYS_ADMIN": (False, ["--inh-caps=-sys_admin", "--bounding-set=-sys_admin"]),
    "root without CAP_SYS_ADMIN, user namespaces disabled": (True, ["--inh-caps=-sys_admin", "--bounding-set=-sys_admin"]),
    "unprivileged": (False, ["--reuid=65534", "--regid=65534", "--clear-groups"]),
    "unprivileged, user namespaces disabled": (True, ["--reuid=65534", "--regid=65534", "--clear-groups"]),
    "unprivileged with bubblewrap": (False, ["--reuid=65534", "--regid=65534", "--clear-groups"]),
}

# Run as root, makes the command's process root of a new user namespace (ids mapped one to one)
# in which no further user namespace can be created.
NO_USERNS = r'''
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
go_read, go_write = os.pipe()
ready_read, ready_write = os.pipe()
child = os.fork()
if child == 0:
    if libc.unshare(0x10000000) != 0:
        os._exit(97)
    os.write(ready_write, b"u")
    os.read(go_read, 1)
    with open("/proc/sys/user/max_user_namespaces", "w") as f:
        f.write("0")
    os.execvp(sys.argv[1], sys.argv[1:])
if os.read(ready_read, 1) != b"u":
    sys.exit(97)
for name in ("uid_map", "gid_map"):
    with open(f"/proc/{child}/{name}", "w") as f:
        f.write("0 0 4294967295\n")
os.write(go_write, b"g")
_, status = os.waitpid(child, 0)
sys.exit(os.waitstatus_to_exitcode(status))
'''


def bwrap_for_tests() -> str | None:
    return os.environ.get("MDRL_TEST_BWRAP") or shutil.which("bwrap")


def interpreter_for(setpriv_args: list[str]) -> str | None:
    """An interpreter (3.9+) that the mode's user can run: ours, else a system one."""
    for candidate in (sys.executable, os.path.realpath(sys.executable), "/usr/bin/python3", "/usr/local/bin/python3"):
        if not os.path.exists(candidate):
            continue
        # through sh's exec: setpriv may fall back to another interpreter where execve fails
        check = ["setpriv", *setpriv_args, "/bin/sh", "-c", 'exec "$0" -I -c "import sys; assert sys.version_info >= (3, 9)"',
                 candidate]
        if not setpriv_args:
            check = check[1:]
        if subprocess.run(check, capture_output=True, timeout=30).returncode == 0:
            return candidate
    return None


def user_namespaces_allowed(setpriv_args: list[str]) -> bool:
    """Whether the mode's user can create user, mount, PID and network namespaces (util-linux unshare)."""
    probe = ["unshare", "--user", "--map-root-user", "--mount", "--net", "--pid", "--fork", "true"]
    command = ["setpriv", *setpriv_args, *probe] if setpriv_args else probe
    return subprocess.run(command, capture_output=True, timeout=30).returncode == 0


def expected_outcome(mode: str, setpriv_args: list[str], no_userns: bool) -> str:
    """'ran' where the mode can isolate (so the sandbox must run the programs safely), else 'refused'."""
    unprivileged = "--reuid=65534" in setpriv_args
    can_admin = not setpriv_args
    bwrap = bwrap_for_tests()
    if mode == "unprivileged with bubblewrap":
        setuid = bool(bwrap and os.stat(bwrap).st_mode & 0o4000)
        return "ran" if setuid or user_namespaces_allowed(setpriv_args) else "refused"
    if can_admin:
        return "ran"  # root with CAP_SYS_ADMIN always has plain namespaces
    if not no_userns and user_namespaces_allowed(setpriv_args):
        return "ran"
    if unprivileged and bwrap and shutil.which("bwrap") == bwrap and os.stat(bwrap).st_mode & 0o4000:
        return "ran"  # a set-uid bubblewrap works without user namespaces
    return "refused"


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    """Run every hostile program in every mode (the modes in parallel); observe the host."""
    if not AS_ROOT:
        pytest.skip("switching between the modes (setpriv, user namespaces) needs root")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    base = Path(tempfile.mkdtemp(prefix="mdrl-matrix-"))
    base.chmod(0o755)
    module = base / "sandbox.py"
    shutil.copy(sandbox.__file__, module)
    driver = base / "driver.py"
    driver.write_text(DRIVER)
    no_userns = base / "no_userns.py"
    no_userns.write_text(NO_USERNS)
    for path in (module, driver, no_userns):
        path.chmod(0o644)
    host_victim = subprocess.Popen(["sleep", "120"])
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    unix_path = f"/tmp/mdrl-escape-{uuid.uuid4().hex}.sock"
    unix_listener = socket.socket(socket.AF_UNIX)
    unix_listener.bind(unix_path)
    os.chmod(unix_path, 0o777)
    unix_listener.listen()
    unix_listener.setblocking(False)
    abstract = f"mdrl-escape-{uuid.uuid4().hex}"
    abstract_listener = socket.socket(socket.AF_UNIX)
    abstract_listener.bind("\0" + abstract)
    abstract_listener.listen()
    abstract_listener.setblocking(False)
    token = f"mdrl-token-{uuid.uuid4().hex}"
    runs, skipped = {}, {}
    try:
        for mode, (wrap, setpriv_args) in MODES.items():
            bwrap = bwrap_for_tests() if mode == "unprivileged with bubblewrap" else None
            if mode == "unprivileged with bubblewrap" and bwrap is None:
                skipped[mode] = "bubblewrap is not installed (set MDRL_TEST_BWRAP to a bwrap binary to test it)"
                continue
            python = interpreter_for(setpriv_args)
            if python is None:
                skipped[mode] = "no Python 3.9+ that the mode's user can run"
                continue
            if wrap and not user_namespaces_allowed([]):
                skipped[mode] = "this kernel does not let root create the user namespace that disables others"
                continue
            host_dir = base / mode.replace(" ", "_").replace(",", "")
            host_dir.mkdir()
            host_dir.chmod(0o777)
            (host_dir / "keep.txt").write_text("precious")
            (host_dir / "secret.txt").write_text(token)
            for name in ("keep.txt", "secret.txt"):
                (host_dir / name).chmod(0o666)
            name = f"mdrl-escape-{uuid.uuid4().hex}"
            targets = {"host": os.getpid(), "host_victim": host_victim.pid, "host_dir": str(host_dir), "name": name,
                       "port": listener.getsockname()[1], "unix_path": unix_path, "abstract": abstract,
                       "mark": FUNCTIONAL_PASS_MARK, "home": os.path.expanduser("~")}
            spec = {"module": str(module), "cases": HOSTILE, "programs": hostile_programs(targets), "targets": targets,
                    "bwrap": bwrap}
            command = [python, "-I", str(driver), json.dumps(spec)]
            if setpriv_args:
                command = ["setpriv", *setpriv_args, *command]
            if wrap:
                command = [sys.executable, "-I", str(no_userns), *command]
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "MDRL_TOKEN": token, "HOME": "/nonexistent"}
            proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=str(base))
            runs[mode] = (proc, host_dir, name, wrap, setpriv_args)
        observed = {}
        for mode, (proc, host_dir, name, wrap, setpriv_args) in runs.items():
            stdout, stderr = proc.communicate(timeout=300)
            observed[mode] = {
                "returncode": proc.returncode,
                "report": json.loads(stdout.decode().strip().splitlines()[-1]) if proc.returncode == 0 else None,
                "stderr": stderr.decode()[-3000:],
                "host_dir": host_dir,
                "name": name,
                "expected": expected_outcome(mode, setpriv_args, wrap),
            }
        host = {
            "victim_alive": host_victim.poll() is None,
            "tcp_connections": accepted(listener),
            "unix_connections": accepted(unix_listener) + accepted(abstract_listener),
            "token": token,
            "temp_dirs": ["/tmp", "/var/tmp", "/dev/shm", tempfile.gettempdir(), os.path.expanduser("~"), "/"],
        }
        yield {"observed": observed, "host": host, "skipped": skipped}
    finally:
        for proc, *_ in runs.values():
            if proc.poll() is None:
                proc.kill()
        host_victim.kill()
        host_victim.wait()
        for s in (listener, unix_listener, abstract_listener):
            s.close()
        os.unlink(unix_path)
        shutil.rmtree(base, ignore_errors=True)


def accepted(listener: socket.socket) -> int:
    count = 0
    while True:
        try:
            connection, _ = listener.accept()
        except BlockingIOError:
            return count
        connection.close()
        count += 1


def escapes(case: str, outcome: dict, observed: dict, host: dict) -> list[str]:
    """What this case achieved against the host, judged from the host's side and from what the
    program printed (a connection made, a host file read, a host process signalled)."""
    found = []
    name, host_dir = observed["name"], observed["host_dir"]
    if host["token"] in json.dumps(outcome):
        found.append("read the caller's token")
    if case in ("network", "read_host_file", "kill_host_pids"):
        done = [line for line in outcome.get("stdout", "").splitlines() if line.startswith("DONE")]
        if done:
            found.append(f"did {done}")
    if case in ("write_outside", "write_system_temp"):
        for directory in [str(host_dir), str(host_dir.parent)] + host["temp_dirs"]:
            if os.path.exists(os.path.join(directory, name)):
                found.append(f"wrote {directory}/{name}")
    if case == "delete_outside":
        if not (host_dir / "keep.txt").exists() or (host_dir / "keep.txt").read_text() != "precious":
            found.append("deleted or changed a host file")
    if case == "spoofed_pass_mark" and outcome.get("passed"):
        found.append("faked a pass")
    return found


def test_hostile_programs_in_every_mode(matrix):
    observed, host = matrix["observed"], matrix["host"]
    assert observed, f"no mode could be tried: {matrix['skipped']}"
    table, failures = [], []
    for mode, seen in observed.items():
        report = seen["report"]
        if report is None:
            failures.append(f"{mode}: ESCAPE or failure: the caller died (rc {seen['returncode']}): {seen['stderr']}")
            continue
        results = report["results"]
        ran = sum(r["outcome"] == "ran" for r in results.values())
        refused = sum(r["outcome"] == "refused" for r in results.values())
        mode_escapes = []
        for case in HOSTILE:
            outcome = results.get(case, {"outcome": "missing"})
            if outcome["outcome"] != seen["expected"]:
                failures.append(f"{mode} / {case}: {outcome['outcome']} where {seen['expected']} was expected: {outcome}")
            if outcome["outcome"] == "refused":
                message = outcome["message"]
                for needed in ("user-namespaces", "bubblewrap", "user.max_user_namespaces"):
                    if needed not in message:
                        failures.append(f"{mode} / {case}: the refusal does not name {needed}: {message}")
            elif outcome["outcome"] == "ran":
                problem = case_problem(case, outcome)
                if problem:
                    failures.append(f"{mode} / {case}: {problem}: {outcome}")
            mode_escapes += [f"{case}: {e}" for e in escapes(case, outcome, seen, host)]
        if report["leftovers"]:
            mode_escapes.append(f"processes left behind: {report['leftovers']}")
        if not report["victim_alive"]:
            mode_escapes.append("the caller's other process was killed")
        failures += [f"{mode}: ESCAPE {e}" for e in mode_escapes]
        table.append(f"{mode:55s} {report['isolation'] or 'refused':16s} ran {ran:2d}  refused {refused:2d}  escapes {len(mode_escapes)}")
    if not host["victim_alive"]:
        failures.append("ESCAPE: a process of the test's own was killed")
    if host["tcp_connections"] or host["unix_connections"]:
        failures.append(f"ESCAPE: connections reached the host: {host['tcp_connections']} tcp, {host['unix_connections']} unix")
    print("\n" + "\n".join(table) + "".join(f"\n{m:55s} skipped: {why}" for m, why in matrix["skipped"].items()))
    assert failures == []


def case_problem(case: str, r: dict) -> str | None:
    """Why a hostile program that ran did not end as it must, or None."""
    if case == "spoofed_pass_mark":
        return "faked a pass" if r["passed"] else None
    out = r["stdout"]
    if case == "infinite_loop":
        return None if r["timed_out"] and r["returncode"] is None and r["seconds"] < 3 else "not stopped in time"
    if case == "memory_bomb":
        return None if r["returncode"] not in (0, None) and "MemoryError" in r["stderr"] else "not stopped by memory"
    if case == "fork_bomb":
        return None if r["returncode"] != 0 and r["seconds"] < 4 else "not contained"
    if case == "printing_gigabytes":
        return None if r["truncated"] and out == "x" * 10_000 else "not truncated"
    if case == "huge_file":
        return None if r["returncode"] == 0 and out.startswith("refused") else "file size not limited"
    if case == "environment":
        keys = set(eval(out)) if out.startswith("{") else None
        return None if keys is not None and keys <= {"PATH", "LANG"} else "environment leaked"
    if case in ("write_outside", "delete_outside", "parent_environ", "kill_parent", "kill_host_pids", "network",
                "write_system_temp", "read_host_file"):
        lines = [line for line in out.splitlines() if line.startswith(("refused", "DONE"))]
        if not lines:
            return "the program did not try"
        if case == "delete_outside" and any(line.startswith("DONE") for line in lines):
            return "removed something"
    return None

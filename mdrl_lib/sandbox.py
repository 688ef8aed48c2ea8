"""Run untrusted Python programs in an isolated sandbox and score them against unit tests.

Introduced in notebook ``00_toy_world`` (full-scale switch): the full-scale Code domain's reward
(the fraction of a problem's unit tests that a generated program passes, for the KlearReasoner
problems). The toy Code domain needs no sandbox: its programs are arithmetic expressions, scored
without running anything. Standard library only.

Isolation. Each program runs as ``python -I -S main.py`` with an empty environment (PATH and LANG
only) under resource limits (CPU time, address space, file size, open files, processes; no core
dumps) and a wall-clock timeout, inside new mount, PID, network, IPC and UTS namespaces:

* its file system is a fresh root holding only the system directories, the interpreter's
  installation and a few files of ``/etc``, all read-only, with private size-limited tmpfs for its
  working directory, ``/tmp``, ``/var/tmp`` and ``/dev/shm``: it cannot write to the host, and it
  cannot read the user's home or the caller's files;
* it sees only its own processes (its own ``/proc``), so it can neither signal, trace nor read the
  environment of the caller; everything it leaves behind dies with it;
* it has no network, not even the host's loopback;
* it holds no capabilities, cannot gain any (``no_new_privs``, set-uid bits ignored) and cannot
  create further user namespaces.

The namespaces come from, in order: user namespaces (root or not, where the kernel allows them;
as root the program runs as a fresh unprivileged uid), plain namespaces as root with
CAP_SYS_ADMIN, or ``bwrap`` (bubblewrap) if installed and the caller is not root. The sandbox
fails closed: where none of them works it raises :class:`SandboxError` saying what is missing and
how to run the Code domain safely, and runs nothing. :func:`isolation` says which one is used.

Functional (assert-based) tests are judged outside the program's process: the test code runs in a
separate judge process, which reaches the program's functions through a pipe that carries plain
values (numbers, strings, containers) and references to the program's objects. Whatever the
program prints, wherever it writes, however it exits, only the judge's own verdict counts.

This module is also the launcher: ``python -I -S sandbox.py CONFIG`` sets the sandbox up, runs
the program in it and reports how it ended.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import os
import select
import signal
import sys
import time

if __name__ != "__main__":
    import selectors
    import shutil
    import subprocess
    import tempfile
    from dataclasses import dataclass
else:  # the launcher, run as a script, starts faster without the host side's imports

    def dataclass(cls=None, **_):
        return cls if cls is not None else (lambda cls: cls)

SANDBOX_UID_BASE = 1 << 30
"""Run as root, sandboxed programs run as uids from here up: fresh ones for each run."""

WORKDIR_PREFIX = "mdrl-sandbox-"
"""Host-side work directories are ``mdrl-sandbox-<pid>-<random>`` in ``tempfile.gettempdir()``,
<pid> being the process that created them, so that leftovers of killed runs can be found."""

ISOLATIONS = ("user-namespaces", "root-namespaces", "bubblewrap")
"""The ways this sandbox can isolate a program, in the order they are tried."""

_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime")
_DEVICES = ("null", "zero", "full", "random", "urandom")
_TMPFS = "size=16m,nr_inodes=4096"
_MAX_FILE_BYTES = 16 << 20
_MAX_OPEN_FILES = 128
_MAX_MESSAGE_BYTES = 16 << 20

_CLONE_NEWNS, _CLONE_NEWUTS, _CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
_CLONE_NEWUSER, _CLONE_NEWPID, _CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REMOUNT = 1, 2, 4, 8, 32
_MS_BIND, _MS_MOVE, _MS_REC, _MS_PRIVATE = 4096, 8192, 16384, 1 << 18
_MNT_DETACH = 2
# statvfs flag -> mount flag, for the flags a bind mount must keep when remounted read-only
_KEPT_FLAGS = {1: _MS_RDONLY, 2: _MS_NOSUID, 4: _MS_NODEV, 8: _MS_NOEXEC, 16: 16, 1024: 1024, 2048: 2048, 4096: 1 << 21}
_PR_SET_PDEATHSIG, _PR_SET_DUMPABLE, _PR_CAPBSET_READ, _PR_CAPBSET_DROP = 1, 4, 23, 24
_CAPABILITY_VERSION_3 = 0x20080522
_PR_SET_SECUREBITS, _PR_SET_NO_NEW_PRIVS, _PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 28, 38, 47, 4
# SECBIT_NOROOT, SECBIT_NOROOT_LOCKED, SECBIT_KEEP_CAPS_LOCKED, SECBIT_NO_CAP_AMBIENT_RAISE(_LOCKED)
_SECUREBITS = (1 << 0) | (1 << 1) | (1 << 5) | (1 << 6) | (1 << 7)
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "ppc64": 203, "s390x": 217,
                   "i686": 217, "i386": 217, "armv7l": 218}

_LINUX = sys.platform.startswith("linux")
_run_ids = itertools.count()
_isolation_cache: dict[str, str] = {}


class SandboxError(RuntimeError):
    """The sandbox cannot run the program safely (it says why), or could not be set up."""


@dataclass(frozen=True)
class SandboxResult:
    """How a sandboxed program ended and what it printed."""

    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool
    output_truncated: bool
    seconds: float

    @property
    def ok(self) -> bool:
        """Whether the program exited with status 0 before its timeout."""
        return self.returncode == 0 and not self.timed_out


@dataclass(frozen=True)
class FunctionalResult:
    """The judge's verdict on one assert-based test of a program."""

    passed: bool
    reason: str
    timed_out: bool
    stderr: str
    seconds: float


def run_python(
    source: str,
    *,
    stdin: str = "",
    timeout_s: float = 5.0,
    memory_mb: int = 256,
    max_output_bytes: int = 65536,
    max_processes: int = 8,
) -> SandboxResult:
    """Run `source` with a fresh Python interpreter in the sandbox, feeding it `stdin`.

    ``returncode`` is None when the sandbox killed the program (timeout or too much output),
    negative (minus the signal) when a signal ended it otherwise. Each of stdout and stderr keeps
    at most `max_output_bytes`; a program printing more is killed and ``output_truncated`` is set.
    `max_processes` counts the program's processes and threads, itself included. Raises
    SandboxError when this machine offers no way to isolate the program (nothing is run then).
    """
    report, stdout, stderr, reason, seconds = _execute("plain", source, stdin.encode("utf-8", "replace"),
                                                       timeout_s, memory_mb, max_output_bytes, max_processes)
    killed = reason is not None or "exit" not in report
    code = None if killed else os.waitstatus_to_exitcode(report["exit"])
    return SandboxResult(
        returncode=code,
        stdout=stdout.decode("utf-8", "replace"),
        stderr=stderr.decode("utf-8", "replace"),
        timed_out=reason == "timeout",
        output_truncated=reason == "overflow",
        seconds=seconds,
    )


def run_tests(program: str, tests: list[dict], *, timeout_s: float = 5.0, **limits) -> list[bool]:
    """Whether `program` passes each stdin/stdout test: run on the test's "input", its stripped
    stdout equals the stripped "output"."""
    results = []
    for test in tests:
        result = run_python(program, stdin=test["input"], timeout_s=timeout_s, **limits)
        passed = result.ok and not result.output_truncated and result.stdout.strip() == str(test["output"]).strip()
        results.append(passed)
    return results


def fraction_passed(program: str, tests: list[dict], **limits) -> float:
    """The fraction of the stdin/stdout `tests` that `program` passes, in [0, 1]; 0.0 without tests."""
    if not tests:
        return 0.0
    return sum(run_tests(program, tests, **limits)) / len(tests)


def run_functional(
    program: str,
    test: str,
    *,
    prelude: str = "",
    timeout_s: float = 5.0,
    memory_mb: int = 256,
    max_output_bytes: int = 65536,
    max_processes: int = 8,
) -> FunctionalResult:
    """Judge one assert-based `test` (Python code, e.g. ``assert f(1) == 2``) against `program`.

    The program (after `prelude`, e.g. imports) runs as ``__main__`` in the sandbox; the test
    runs in a separate judge process, with `prelude` too, where names it does not define resolve
    to the program's globals. Values cross as plain data (None, bools, ints, floats, strings,
    bytes and their lists, tuples, sets and dicts); other objects cross as references whose
    attributes, calls, items, length, truth and iteration are the program's, but which equal
    only themselves. The test passes when it runs to its end without an exception. Its verdict
    travels on a pipe that only the judge holds: nothing the program prints, writes or raises,
    and no way it exits, makes a failing test pass. Raises SandboxError as :func:`run_python`.
    """
    payload = json.dumps({"prelude": prelude, "test": test}).encode()
    report, _, stderr, reason, seconds = _execute("functional", program, payload, timeout_s, memory_mb,
                                                  max_output_bytes, max_processes)
    verdict = report.get("verdict") or {}
    passed = reason is None and verdict.get("passed") is True
    if reason is not None:
        why = {"timeout": "timed out", "overflow": "printed too much"}[reason]
    else:
        why = str(verdict.get("reason", "the judge gave no verdict"))
    return FunctionalResult(passed=passed, reason=why if not passed else "", timed_out=reason == "timeout",
                            stderr=stderr.decode("utf-8", "replace"), seconds=seconds)


def functional_fraction_passed(program: str, tests: list[str], *, prelude: str = "", **limits) -> float:
    """The fraction of the assert-based `tests` that `program` passes, in [0, 1]; 0.0 without tests."""
    if not tests:
        return 0.0
    return sum(run_functional(program, test, prelude=prelude, **limits).passed for test in tests) / len(tests)


def isolation() -> str:
    """How this machine isolates sandboxed programs: one of ISOLATIONS, found by running a trivial
    program once (then remembered). Raises SandboxError saying what is missing where none works."""
    if "method" not in _isolation_cache:
        run_python("pass", timeout_s=10.0)
    return _isolation_cache["method"]


# ----------------------------------------------------------------------------- host side


def _execute(kind: str, source: str, stdin: bytes, timeout_s: float, memory_mb: int, max_output_bytes: int,
             max_processes: int) -> tuple[dict, bytes, bytes, str | None, float]:
    """Run one sandboxed job; returns the launcher's report, stdout, stderr, why reading stopped
    early ("timeout", "overflow" or None) and the seconds taken. Tries bubblewrap when the
    launcher's own namespaces are unavailable, and raises SandboxError when nothing isolates."""
    if not _LINUX:
        raise SandboxError(_refusal([f"namespaces: this is {sys.platform}, not Linux"]))
    if "refused" in _isolation_cache:
        raise SandboxError(_isolation_cache["refused"])
    start = time.monotonic()
    config = {
        "kind": kind,
        "cpu_s": max(1, math.ceil(timeout_s)),
        "memory_mb": int(memory_mb),
        "max_processes": int(max_processes),
        # Resolved here: a virtual environment's link may point where the sandbox cannot see.
        "executable": os.path.realpath(sys.executable),
        "uids": _fresh_uids() if os.geteuid() == 0 else None,
    }
    use_bwrap = _isolation_cache.get("method") == "bubblewrap"
    while True:
        report, stdout, stderr, reason = _launch_once(config, source, stdin, start + timeout_s, max_output_bytes,
                                                      bwrap=use_bwrap)
        if use_bwrap and "isolation" not in report and "error" not in report and reason != "timeout":
            tail = stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["it ended without a word"]
            report = {"unavailable": list(_isolation_cache.get("reasons", [])) + [f"bubblewrap: {tail[0]}"]}
        if "unavailable" not in report:
            if "isolation" not in report and "error" not in report and reason is None:
                tail = stderr.decode("utf-8", "replace").strip()[-2000:]
                report = {"error": f"the launcher ended before the sandbox was set up: {tail or 'no message'}"}
            break
        reasons = report["unavailable"]
        _isolation_cache["reasons"] = reasons
        bwrap = None if os.geteuid() == 0 else _bwrap_path()
        if use_bwrap or bwrap is None:
            if not use_bwrap:
                reasons.append("bubblewrap: not used as root" if os.geteuid() == 0 else "bubblewrap: bwrap is not installed")
            _isolation_cache["refused"] = _refusal(reasons)
            raise SandboxError(_isolation_cache["refused"])
        use_bwrap = True
    if "error" in report:
        raise SandboxError(f"the sandbox could not be set up: {report['error']}")
    if "isolation" in report:
        _isolation_cache["method"] = report["isolation"]
    return report, stdout, stderr, reason, time.monotonic() - start


def _launch_once(config: dict, source: str, stdin: bytes, deadline: float, cap: int,
                 bwrap: bool) -> tuple[dict, bytes, bytes, str | None]:
    """Start the launcher once (directly, or inside bubblewrap) and collect what it reports."""
    workdir = tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-", dir=tempfile.gettempdir())
    status_read, status_write = os.pipe()
    try:
        with open(os.path.join(workdir, "main.py"), "w", encoding="utf-8", errors="replace") as f:
            f.write(source)
        config = dict(config, workdir=workdir, status_fd=status_write)
        launcher = os.path.abspath(__file__)
        if bwrap:
            command = _bwrap_command(config, launcher)
        else:
            command = [sys.executable, "-I", "-S", launcher, json.dumps(config)]
        proc = subprocess.Popen(
            command,
            cwd=workdir,
            env=dict(_ENV),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
            pass_fds=(status_write,),
            start_new_session=True,
        )
        os.close(status_write)
        status_write = -1
        reason = "interrupted"
        try:
            stdout, stderr, reason = _communicate(proc, stdin, deadline, cap)
        finally:
            _finish(proc, deadline, kill_now=reason is not None)
        report = _read_report(status_read)
    finally:
        for fd in (status_read, status_write):
            if fd >= 0:
                os.close(fd)
        shutil.rmtree(workdir, ignore_errors=True)
    return report, stdout, stderr, reason


def _read_report(fd: int) -> dict:
    """The JSON lines the trusted side of the sandbox wrote on the status pipe, merged."""
    os.set_blocking(fd, False)
    data = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    report: dict = {}
    for line in data.splitlines():
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if isinstance(message, dict):
            report.update(message)
    return report


def _refusal(reasons: list[str]) -> str:
    return (
        "the sandbox cannot isolate untrusted programs on this machine, so it runs none of them "
        "(running them with your rights would let them read, write and kill what you can). Missing: "
        + "; ".join(reasons)
        + ". To score the full-scale Code domain safely, do one of: allow unprivileged user namespaces "
        "(sysctl kernel.unprivileged_userns_clone=1 and user.max_user_namespaces > 0; on Ubuntu 24.04 "
        "kernel.apparmor_restrict_unprivileged_userns=0), install bubblewrap (apt install bubblewrap), "
        "or run as root with CAP_SYS_ADMIN (e.g. docker run --cap-add SYS_ADMIN --security-opt "
        "seccomp=unconfined). The toy Code domain needs no sandbox."
    )


def _fresh_uids() -> list[int]:
    """Two uids (program, judge) that no other sandbox run uses at the same time: from this
    process's pid and a counter."""
    base = SANDBOX_UID_BASE + (os.getpid() % (1 << 22)) * 256 + (next(_run_ids) % 128) * 2
    return [base, base + 1]


@functools.cache
def _bwrap_path() -> str | None:
    return shutil.which("bwrap", path=_ENV["PATH"])


def _bwrap_command(config: dict, launcher: str) -> list[str]:
    """The bubblewrap command that builds the sandbox's root and starts the launcher inside it."""
    bwrap = _bwrap_path()
    workdir = config["workdir"]
    args = [bwrap, "--unshare-all", "--unshare-user", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    if _bwrap_supports("--disable-userns"):
        args += ["--disable-userns"]
    for path in _SYSTEM_DIRS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for path in _interpreter_paths(config["executable"], host=True) + [p for p in _ETC_FILES if os.path.exists(p)]:
        args += ["--ro-bind", path, path]
    args += ["--proc", "/proc", "--dev", "/dev"]
    for path in ("/tmp", "/var/tmp", "/dev/shm"):
        args += ["--size", str(16 << 20), "--perms", "1777", "--tmpfs", path]
    args += ["--ro-bind", launcher, "/.mdrl/sandbox.py", "--ro-bind", workdir, "/.mdrl/source"]
    args += ["--size", str(16 << 20), "--perms", "0700", "--tmpfs", workdir, "--chdir", workdir,
             "--remount-ro", "/"]
    inner = dict(config, inside="bubblewrap", source="/.mdrl/source/main.py")
    return args + ["--", config["executable"], "-I", "-S", "/.mdrl/sandbox.py", json.dumps(inner)]


@functools.cache
def _bwrap_supports(option: str) -> bool:
    try:
        text = subprocess.run([_bwrap_path(), "--help"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return option in text


def _communicate(proc: subprocess.Popen, data: bytes, deadline: float, cap: int) -> tuple[bytes, bytes, str | None]:
    """Feed `data` to the launcher and read stdout and stderr until they close or it exits.

    Returns the two outputs and why reading stopped early: "timeout", "overflow" (an output
    passed `cap` bytes) or None.
    """
    outputs = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
    stdin_fd = proc.stdin.fileno()
    pending = memoryview(data)
    reason = None
    with selectors.DefaultSelector() as selector:
        for fd in outputs:
            selector.register(fd, selectors.EVENT_READ)
        if pending:
            selector.register(stdin_fd, selectors.EVENT_WRITE)
        else:
            proc.stdin.close()
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                reason = "timeout"
                break
            events = selector.select(min(remaining, 0.05))
            if not events and _has_exited(proc):
                break
            for key, _ in events:
                if key.fd == stdin_fd:
                    try:
                        pending = pending[os.write(stdin_fd, pending[: select.PIPE_BUF]) :]
                    except BrokenPipeError:
                        pending = pending[:0]
                    if not pending:
                        selector.unregister(stdin_fd)
                        proc.stdin.close()
                    continue
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fd)
                    continue
                output = outputs[key.fd]
                output += chunk
                if len(output) > cap:
                    del output[cap:]
                    reason = "overflow"
            if reason:
                break
    return bytes(outputs[proc.stdout.fileno()]), bytes(outputs[proc.stderr.fileno()]), reason


def _finish(proc: subprocess.Popen, deadline: float, kill_now: bool) -> None:
    """Wait for the launcher until `deadline` (or not at all), then kill its process group and reap it.

    Killing the launcher's group kills the sandbox's first process, and with it every process in
    the sandbox's PID namespace.
    """
    if not kill_now:
        while not _has_exited(proc) and time.monotonic() < deadline:
            time.sleep(0.002)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    proc.wait()
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        pipe.close()


def _has_exited(proc: subprocess.Popen) -> bool:
    """Whether the launcher has exited, without reaping it (its pid, the group id, stays taken)."""
    return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


# ----------------------------------------------------------------------------- launcher side
#
# launcher (host namespaces) --fork--> setup (unshares) --fork--> init (pid 1: builds the root)
#   init --fork+exec--> program;  for functional tests also  init --fork--> judge
# Only the trusted processes (launcher, setup, init, judge) hold the status pipe to the host.


class _Job:
    """What the launcher runs: its configuration, the program's source, the test (functional only)."""

    def __init__(self, config: dict, source: bytes, payload: dict | None, status_fd: int) -> None:
        self.config, self.source, self.payload, self.status_fd = config, source, payload, status_fd


def _launch(config: dict) -> None:
    """Set the sandbox up, run the job in it, report to the host on the status pipe and exit."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    status_fd = config["status_fd"]
    os.set_inheritable(status_fd, False)
    try:
        _set_limit("RLIMIT_CORE", 0)
        with open(config.get("source", os.path.join(config["workdir"], "main.py")), "rb") as f:
            source = f.read()
        payload = None
        if config["kind"] == "functional":
            with os.fdopen(os.dup(0), "rb") as f:
                payload = json.loads(f.read())
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.close(null)
        job = _Job(config, source, payload, status_fd)
        if config.get("inside") == "bubblewrap":
            _report(status_fd, {"isolation": "bubblewrap"})
            _init(job, "bubblewrap", None)
        reasons = []
        for method in ("user-namespaces", "root-namespaces"):
            if method == "root-namespaces" and os.geteuid() != 0:
                reasons.append("root-namespaces: not running as root")
                continue
            failure = _attempt(job, method)
            if failure is None:
                os._exit(0)
            reasons.append(f"{method}: {failure}")
        _report(status_fd, {"unavailable": reasons})
    except BaseException as exc:
        _report(status_fd, {"error": f"{type(exc).__name__}: {exc}"})
    os._exit(0)


def _attempt(job: _Job, method: str) -> str | None:
    """Run the job isolated by `method`; None once it ran, else why `method` is unavailable here."""
    setup_read, setup_write = os.pipe()
    go_read, go_write = os.pipe()
    setup = os.fork()
    if setup == 0:
        os.close(setup_read)
        os.close(go_write)
        _setup(job, method, setup_write, go_read)
    os.close(setup_write)
    os.close(go_read)
    with os.fdopen(setup_read, "rb") as messages:
        message = _receive(messages)
        if message.get("unshared") and method == "user-namespaces" and job.config["uids"] is not None:
            try:
                _write_maps(setup, job.config["uids"])
            except OSError as exc:
                message = {"failed": f"could not map the sandbox's uids: {exc}"}
        if message.get("unshared"):
            os.write(go_write, b"go")
            message = _receive(messages)
    os.close(go_write)
    if not message.get("started"):
        _signal(setup, signal.SIGKILL)
        os.waitpid(setup, 0)
        return message.get("failed", "the sandbox's setup process died")
    os.waitpid(setup, 0)
    return None


def _setup(job: _Job, method: str, setup_write: int, go_read: int) -> None:
    """In the forked setup process: enter the namespaces, then start the sandbox's first process."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    try:
        flags = _CLONE_NEWNS | _CLONE_NEWNET | _CLONE_NEWIPC | _CLONE_NEWPID | _CLONE_NEWUTS
        if method == "user-namespaces":
            uid, gid = os.getuid(), os.getgid()
            _unshare(_CLONE_NEWUSER | flags, "user, mount, PID, network, IPC and UTS namespaces")
            if job.config["uids"] is None:  # else the launcher maps root and two fresh uids
                _write_file("/proc/self/setgroups", "deny")
                _write_file("/proc/self/uid_map", f"0 {uid} 1\n")
                _write_file("/proc/self/gid_map", f"0 {gid} 1\n")
        else:
            _unshare(flags, "mount, PID, network, IPC and UTS namespaces")
    except OSError as exc:
        _send(setup_write, {"failed": exc.strerror or str(exc)})
        os._exit(0)
    _send(setup_write, {"unshared": True})
    if os.read(go_read, 2) != b"go":
        os._exit(0)
    os.close(go_read)
    init = os.fork()
    if init == 0:
        _init(job, method, setup_write)
    os.close(setup_write)
    os.waitpid(init, 0)
    os._exit(0)


def _init(job: _Job, method: str, setup_write: int | None) -> None:
    """The sandbox's first process (pid 1): build the root, start the program (and the judge), report.

    When it exits, the kernel kills every process left in the sandbox.
    """
    config, kind = job.config, job.config["kind"]
    if setup_write is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    _prctl(_PR_SET_DUMPABLE, 0)
    try:
        program_ids, judge_ids = _sandbox_ids(method, config)
        if method != "bubblewrap":
            _build_root(config, program_ids, job.source)
            if method == "user-namespaces" and os.path.exists("/proc/sys/user"):  # else /proc is not mounted
                _write_file("/proc/sys/user/max_user_namespaces", "0")
        else:
            with open(os.path.join(config["workdir"], "main.py"), "wb") as f:
                f.write(job.source)
        extra_tasks = _tasks_sharing_the_program_uid(method, config)
        rpc = (os.pipe(), os.pipe()) if kind == "functional" else None
        prelude = job.payload["prelude"] if rpc else ""
        program = _start_program(config, program_ids, rpc, extra_tasks, prelude)
        judge = _start_judge(job, judge_ids, rpc) if rpc else None
    except Exception as exc:
        if setup_write is None:
            _report(job.status_fd, {"error": f"{type(exc).__name__}: {exc}"})
            os._exit(0)
        _send(setup_write, {"failed": f"{type(exc).__name__}: {exc}"})
        os._exit(0)
    if setup_write is not None:
        _report(job.status_fd, {"isolation": method})
        _send(setup_write, {"started": True})
        os.close(setup_write)
    waited_for = judge if judge else program
    while True:
        pid, status = os.waitpid(-1, 0)
        if pid == waited_for:
            if kind == "plain":
                _report(job.status_fd, {"exit": status})
            os._exit(0)


def _sandbox_ids(method: str, config: dict) -> tuple[tuple[int, int], tuple[int, int]]:
    """(uid, gid) of the program and of the judge, as seen inside the sandbox."""
    if method == "root-namespaces":
        program, judge = config["uids"]
        return (program, program), (judge, judge)
    if method == "user-namespaces" and config["uids"] is not None:
        return (1, 1), (2, 2)  # mapped to the two fresh host uids by _write_maps
    uid, gid = os.getuid(), os.getgid()  # one uid only: the judge is protected by being undumpable
    return (uid, gid), (uid, gid)


def _tasks_sharing_the_program_uid(method: str, config: dict) -> int:
    """How many trusted tasks count against the program's process limit (same uid, same namespace)."""
    judge = config["kind"] == "functional"
    if method == "user-namespaces" and config["uids"] is None:
        return 2 + judge  # setup, init (and the judge)
    if method == "bubblewrap":
        return 2 + judge  # bubblewrap's init, init (and the judge)
    return 0


def _write_maps(pid: int, uids: list[int]) -> None:
    """Map the sandbox's uids and gids 0 (root), 1 (program), 2 (judge) to host root and two fresh ids."""
    program, judge = uids
    _write_file(f"/proc/{pid}/uid_map", f"0 0 1\n1 {program} 1\n2 {judge} 1\n")
    _write_file(f"/proc/{pid}/gid_map", f"0 0 1\n1 {program} 1\n2 {judge} 1\n")


def _build_root(config: dict, program_ids: tuple[int, int], source: bytes) -> None:
    """Build the sandbox's file system on a tmpfs and make it the root (see the module docstring)."""
    workdir = config["workdir"]
    root = workdir  # the host's work directory is the mount point of the new root
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)
    _mount("tmpfs", root, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=1m,nr_inodes=4096,mode=0755")
    for path in _SYSTEM_DIRS:
        if os.path.islink(path):
            os.symlink(os.readlink(path), root + path)
        elif os.path.isdir(path):
            _bind_read_only(path, root + path)
    for path in _interpreter_paths(config["executable"]) + list(_ETC_FILES):
        if os.path.exists(path):
            _bind_read_only(path, root + path)
    dev = root + "/dev"
    os.mkdir(dev, 0o755)
    _mount("tmpfs", dev, "tmpfs", _MS_NOSUID | _MS_NOEXEC, "size=64k,nr_inodes=64,mode=0755")
    for name in _DEVICES:
        open(f"{dev}/{name}", "w").close()
        _mount(f"/dev/{name}", f"{dev}/{name}", None, _MS_BIND)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{dev}/{name}")
    for path in ("/tmp", "/var/tmp", "/dev/shm"):
        os.makedirs(root + path, 0o755, exist_ok=True)
        _mount("tmpfs", root + path, "tmpfs", _MS_NOSUID | _MS_NODEV, f"{_TMPFS},mode=1777")
    os.mkdir(root + "/proc", 0o555)
    try:
        _mount("proc", root + "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    except OSError:
        pass  # e.g. in a container that masks parts of /proc: the sandbox then has an empty /proc
    os.makedirs(root + workdir, 0o755, exist_ok=True)
    uid, gid = program_ids
    _mount("tmpfs", root + workdir, "tmpfs", _MS_NOSUID | _MS_NODEV, f"{_TMPFS},mode=0700,uid={uid},gid={gid}")
    main = f"{root}{workdir}/main.py"
    with open(main, "wb") as f:
        f.write(source)
    os.chown(main, uid, gid)
    _pivot_root(root)
    _mount(None, "/", None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)


def _interpreter_paths(executable: str, host: bool = False) -> list[str]:
    """Directories outside the system directories that the interpreter needs: its installation and
    those of the shared libraries loaded now (realpaths, none inside another); on the `host` side,
    not those of the packages it has loaded."""
    candidates = {os.path.realpath(sys.base_prefix), os.path.dirname(os.path.dirname(executable))}
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split(maxsplit=5)
                if len(parts) == 6 and parts[5].startswith("/") and not (host and "-packages/" in parts[5]):
                    candidates.add(os.path.dirname(os.path.realpath(parts[5].strip())))
    except OSError:
        pass
    system = [os.path.realpath(p) for p in _SYSTEM_DIRS if os.path.exists(p)]

    def inside(path: str, parents: list[str]) -> bool:
        return any(path == p or path.startswith(p.rstrip("/") + "/") for p in parents)

    kept: list[str] = []
    for path in sorted(candidates, key=len):
        if path not in ("/", "") and os.path.isdir(path) and not inside(path, system) and not inside(path, kept):
            kept.append(path)
    return kept


def _bind_read_only(source: str, target: str) -> None:
    """Bind `source` at `target` (creating it and its parents), read-only, nosuid and nodev."""
    os.makedirs(os.path.dirname(target), 0o755, exist_ok=True)
    if os.path.isdir(source):
        os.makedirs(target, 0o755, exist_ok=True)
    elif not os.path.exists(target):
        open(target, "w").close()
    _mount(source, target, None, _MS_BIND)
    kept = 0
    flags = os.statvfs(source).f_flag
    for statvfs_flag, mount_flag in _KEPT_FLAGS.items():
        if flags & statvfs_flag:
            kept |= mount_flag
    _mount(None, target, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NODEV | kept)


def _pivot_root(root: str) -> None:
    """Make `root` the root directory and detach the old one."""
    import ctypes

    os.chdir(root)
    number = _SYS_PIVOT_ROOT.get(os.uname().machine)
    if number is not None:
        if _libc().syscall(number, b".", b".") == 0:
            if _libc().umount2(b".", _MNT_DETACH) != 0:
                raise OSError(ctypes.get_errno(), "could not detach the old root")
            os.chdir("/")
            return
        if ctypes.get_errno() != 22:
            raise OSError(ctypes.get_errno(), f"pivot_root: {os.strerror(ctypes.get_errno())}")
    # An unknown architecture, or an old root that is no mount point: move the new root over it.
    _mount(root, "/", None, _MS_MOVE)
    os.chroot(".")
    os.chdir("/")


def _start_program(config: dict, ids: tuple[int, int], rpc, extra_tasks: int, prelude: str) -> int:
    """Fork the program's process; it drops every privilege and execs the interpreter. Returns its
    pid once the exec has succeeded; raises if it failed."""
    exec_read, exec_write = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            import fcntl

            os.close(exec_read)
            exec_write = fcntl.fcntl(exec_write, fcntl.F_DUPFD_CLOEXEC, 64)
            os.setsid()
            if rpc is None:
                keep = {0: 0, 1: 1, 2: 2}
                argv = [config["executable"], "-I", "-S", "main.py"]
            else:
                (request_read, _), (_, response_write) = rpc
                null = os.open(os.devnull, os.O_RDWR)
                keep = {0: null, 1: null, 2: 2, 3: request_read, 4: response_write}
                argv = [config["executable"], "-I", "-S", "-c", _AGENT, json.dumps({"prelude": prelude})]
            _arrange_fds(keep, exec_write)
            os.chdir(config["workdir"])
            _set_limit("RLIMIT_CPU", config["cpu_s"], config["cpu_s"] + 1)
            _set_limit("RLIMIT_AS", config["memory_mb"] << 20)
            _set_limit("RLIMIT_FSIZE", _MAX_FILE_BYTES)
            _set_limit("RLIMIT_NOFILE", _MAX_OPEN_FILES)
            _set_limit("RLIMIT_NPROC", config["max_processes"] + extra_tasks)
            _drop_privileges(*ids)
            _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
            os.execve(config["executable"], argv, dict(_ENV))
        except BaseException as exc:
            os.write(exec_write, f"could not start {config['executable']}: {type(exc).__name__}: {exc}".encode())
        finally:
            os._exit(127)
    os.close(exec_write)
    with os.fdopen(exec_read, "rb") as f:
        failure = f.read()
    if failure:
        os.waitpid(pid, 0)
        raise OSError(failure.decode("utf-8", "replace"))
    return pid


def _start_judge(job: _Job, ids: tuple[int, int], rpc) -> int:
    """Fork the judge: it drops every privilege, becomes undumpable and judges the test."""
    (request_read, request_write), (response_read, response_write) = rpc
    os.close(request_read)
    os.close(response_write)
    pid = os.fork()
    if pid == 0:
        verdict = {"passed": False, "reason": "the judge failed"}
        try:
            os.setsid()
            null = os.open(os.devnull, os.O_RDWR)
            _arrange_fds({0: null, 1: null, 2: null, 3: job.status_fd, 4: request_write, 5: response_read}, -1)
            os.chdir("/")
            _set_limit("RLIMIT_CPU", job.config["cpu_s"], job.config["cpu_s"] + 1)
            _set_limit("RLIMIT_AS", (job.config["memory_mb"] + 64) << 20)
            _set_limit("RLIMIT_NOFILE", _MAX_OPEN_FILES)
            _drop_privileges(*ids)
            _prctl(_PR_SET_DUMPABLE, 0)
            _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
            verdict = _judge(job.payload["prelude"], job.payload["test"], 4, 5)
        except BaseException as exc:
            verdict = {"passed": False, "reason": f"the judge failed: {type(exc).__name__}: {exc}"}
        finally:
            _report(3, {"verdict": verdict})
            os._exit(0)
    os.close(request_write)
    os.close(response_read)
    return pid


def _arrange_fds(keep: dict[int, int], also_keep: int) -> None:
    """Make fd n a copy of keep[n] for each n, and close every other fd but `also_keep`."""
    sources = {n: os.dup(fd) for n, fd in keep.items()}
    for n, fd in sources.items():
        os.dup2(fd, n)
    for name in os.listdir("/proc/self/fd") if os.path.isdir("/proc/self/fd") else [str(n) for n in range(1024)]:
        fd = int(name)
        if fd not in keep and fd != also_keep:
            try:
                os.close(fd)
            except OSError:
                pass


def _drop_privileges(uid: int, gid: int) -> None:
    """Become (uid, gid) with no capabilities, no way to regain any, and no supplementary groups.

    Checked afterwards (capget and the bounding set): the sandbox refuses to run code that kept any.
    """
    import ctypes

    libc = _libc()
    if _prctl(_PR_SET_NO_NEW_PRIVS, 1) != 0:
        raise OSError("could not set no_new_privs")
    caps = [cap for cap in range(64) if _prctl(_PR_CAPBSET_READ, cap) >= 0]
    for cap in caps:
        _prctl(_PR_CAPBSET_DROP, cap)
    _prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL)
    _prctl(_PR_SET_SECUREBITS, _SECUREBITS)  # where it fails, the empty bounding set still holds
    try:
        os.setgroups([])
    except OSError:
        pass  # a user namespace with setgroups denied: there are no supplementary groups
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    header = (ctypes.c_uint32 * 2)(_CAPABILITY_VERSION_3, 0)  # this process
    data = (ctypes.c_uint32 * 6)()
    if libc.capset(header, data) != 0 or libc.capget(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")
    kept = [cap for cap in caps if _prctl(_PR_CAPBSET_READ, cap) == 1]
    if any(data) or kept or not caps:
        raise OSError(f"capabilities remain after dropping them: sets {list(data)}, bounding {kept}")
    if os.getuid() != uid or os.getgid() != gid or os.geteuid() != uid:
        raise OSError(f"still uid {os.getuid()} gid {os.getgid()}")


def _unshare(flags: int, what: str) -> None:
    import ctypes

    libc = _libc()
    if libc is None or libc.unshare(flags) != 0:
        errno = ctypes.get_errno() if libc is not None else 38
        raise OSError(errno, f"cannot create {what}: {os.strerror(errno)}{_userns_hint(flags, errno)}")


def _userns_hint(flags: int, errno: int) -> str:
    """What the kernel's settings say about unprivileged user namespaces, when creating one failed."""
    if not flags & _CLONE_NEWUSER:
        return " (needs CAP_SYS_ADMIN)"
    notes = []
    for path, bad in (("/proc/sys/kernel/unprivileged_userns_clone", "0"), ("/proc/sys/user/max_user_namespaces", "0"),
                      ("/proc/sys/kernel/apparmor_restrict_unprivileged_userns", "1")):
        value = _read_text(path, None)
        if value is not None and value.strip() == bad:
            notes.append(f"{path} is {bad}")
    if errno == 28 and not notes:
        notes.append("the user namespace limit (user.max_user_namespaces) is reached here")
    return f" ({'; '.join(notes)})" if notes else " (unprivileged user namespaces are not permitted here)"


# ----------------------------------------------------------------------------- the judge
#
# The program's process runs _AGENT: it loads the program as __main__, then answers requests on
# fd 3 with replies on fd 4, one JSON line each. Values are tagged so that the judge rebuilds only
# plain built-in values; anything else stays in the program's process, named by a handle.

_AGENT = r'''
import builtins, json, os, sys
def main():
    requests, replies = os.fdopen(3, "rb"), os.fdopen(4, "wb")
    objects = {}
    def send(message):
        replies.write(json.dumps(message).encode() + b"\n")
        replies.flush()
    def encode(value, depth=0):
        kind = type(value)
        if value is None or kind in (bool, int, str):
            return value
        if depth < 64:
            if kind is float:
                return {"f": repr(value)}
            if kind is complex:
                return {"c": repr(value)}
            if kind is bytes:
                return {"b": value.hex()}
            if kind in (list, tuple, set, frozenset):
                tag = {list: "l", tuple: "t", set: "s", frozenset: "fs"}[kind]
                return {tag: [encode(item, depth + 1) for item in value]}
            if kind is dict:
                return {"d": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
        objects[id(value)] = value
        return {"h": id(value)}
    def decode(value):
        if value is None or type(value) in (bool, int, str):
            return value
        (tag, inner), = value.items()
        if tag == "h":
            return objects[inner]
        if tag == "f":
            return float(inner)
        if tag == "c":
            return complex(inner)
        if tag == "b":
            return bytes.fromhex(inner)
        if tag == "d":
            return {decode(k): decode(v) for k, v in inner}
        items = [decode(v) for v in inner]
        return {"l": list, "t": tuple, "s": set, "fs": frozenset}[tag](items)
    config = json.loads(sys.argv[1])
    namespace = {"__name__": "__main__", "__builtins__": builtins, "__file__": "main.py"}
    sys.argv[:] = ["main.py"]
    try:
        exec(compile(config["prelude"], "<prelude>", "exec"), namespace)
        with open("main.py", "rb") as f:
            exec(compile(f.read(), "main.py", "exec"), namespace)
    except BaseException as exc:
        send({"loaded": False, "error": f"{type(exc).__name__}: {exc}"[:1000]})
        return
    send({"loaded": True})
    for line in requests:
        request = json.loads(line)
        op = request["op"]
        try:
            if op == "global":
                if request["name"] not in namespace:
                    send({"missing": True})
                    continue
                value = namespace[request["name"]]
            else:
                target = objects[request["h"]]
                if op == "getattr":
                    value = getattr(target, request["name"])
                elif op == "setattr":
                    value = setattr(target, request["name"], decode(request["value"]))
                elif op == "call":
                    args = [decode(v) for v in request["args"]]
                    value = target(*args, **{k: decode(v) for k, v in request["kwargs"].items()})
                elif op == "getitem":
                    value = target[decode(request["key"])]
                elif op == "setitem":
                    target[decode(request["key"])] = decode(request["value"])
                    value = None
                elif op == "len":
                    value = len(target)
                elif op == "bool":
                    value = bool(target)
                elif op == "contains":
                    value = decode(request["item"]) in target
                elif op == "iter":
                    value = iter(target)
                    objects[id(value)] = value
                    value = {"h": id(value)}
                    send({"value": value})
                    continue
                elif op == "next":
                    try:
                        value = next(target)
                    except StopIteration:
                        send({"stop": True})
                        continue
                elif op == "repr":
                    value = repr(target)
                elif op == "str":
                    value = str(target)
                else:
                    raise ValueError(op)
            send({"value": encode(value)})
        except BaseException as exc:
            send({"raised": type(exc).__name__, "message": str(exc)[:1000]})
main()
'''


class _ProgramGone(Exception):
    """The program's process stopped answering the judge."""


class _RemoteError(Exception):
    """An exception raised in the program's process that is no built-in exception."""


class _Link:
    """The judge's end of the pipe to the program's process."""

    def __init__(self, request_fd: int, reply_fd: int) -> None:
        self.requests = os.fdopen(request_fd, "wb")
        self.replies = os.fdopen(reply_fd, "rb")

    def receive(self) -> dict:
        line = self.replies.readline(_MAX_MESSAGE_BYTES)
        if not line.endswith(b"\n"):
            raise _ProgramGone("the program's process closed the pipe" if not line else "a reply was too long")
        try:
            message = json.loads(line, parse_float=_no_float, parse_constant=_no_float)
        except (ValueError, RecursionError) as exc:
            raise _ProgramGone(f"malformed reply: {exc}") from None
        if type(message) is not dict:
            raise _ProgramGone("malformed reply")
        return message

    def ask(self, op: str, **fields):
        """Send a request; return the decoded value, or raise what the program raised."""
        try:
            self.requests.write(json.dumps({"op": op, **fields}).encode() + b"\n")
            self.requests.flush()
        except OSError as exc:
            raise _ProgramGone(f"the program's process is gone ({exc})") from None
        reply = self.receive()
        if "value" in reply:
            return _decode(reply["value"], self)
        if reply.get("missing") is True and op == "global":
            raise KeyError(fields["name"])
        if reply.get("stop") is True and op == "next":
            raise StopIteration
        if type(reply.get("raised")) is str:
            raise _exception_named(reply["raised"], str(reply.get("message", "")))
        raise _ProgramGone("malformed reply")


def _no_float(text: str):
    raise ValueError(f"untagged number {text}")


def _exception_named(name: str, message: str) -> Exception:
    """The built-in exception called `name` (ordinary exceptions only), else a _RemoteError."""
    kind = getattr(__import__("builtins"), name, None)
    if isinstance(kind, type) and issubclass(kind, Exception) and kind not in (StopIteration, StopAsyncIteration):
        try:
            return kind(message)
        except Exception:
            pass
    return _RemoteError(f"{name}: {message}")


def _decode(value, link: _Link, depth: int = 0):
    """Rebuild a value sent by the program: plain built-ins only, or a _Remote for a handle."""
    if depth > 200:
        raise _ProgramGone("a reply nested too deeply")
    if value is None or type(value) in (bool, int, str):
        return value
    if type(value) is dict and len(value) == 1:
        (tag, inner), = value.items()
        if tag == "h" and type(inner) is int:
            return _Remote(link, inner)
        if tag in ("f", "c") and type(inner) is str:
            return float(inner) if tag == "f" else complex(inner)
        if tag == "b" and type(inner) is str:
            return bytes.fromhex(inner)
        if tag in ("l", "t", "s", "fs") and type(inner) is list:
            items = [_decode(item, link, depth + 1) for item in inner]
            return {"l": list, "t": tuple, "s": set, "fs": frozenset}[tag](items)
        if tag == "d" and type(inner) is list and all(type(p) is list and len(p) == 2 for p in inner):
            return {_decode(k, link, depth + 1): _decode(v, link, depth + 1) for k, v in inner}
    raise _ProgramGone("a malformed value in a reply")


def _encode(value, depth: int = 0):
    """Tag a value the judge sends to the program; only plain built-ins and _Remote handles cross."""
    kind = type(value)
    if value is None or kind in (bool, int, str):
        return value
    if depth > 200:
        raise ValueError("a value nested too deeply to send to the program")
    if kind is float:
        return {"f": repr(value)}
    if kind is complex:
        return {"c": repr(value)}
    if kind is bytes:
        return {"b": value.hex()}
    if kind in (list, tuple, set, frozenset):
        return {{list: "l", tuple: "t", set: "s", frozenset: "fs"}[kind]: [_encode(v, depth + 1) for v in value]}
    if kind is dict:
        return {"d": [[_encode(k, depth + 1), _encode(v, depth + 1)] for k, v in value.items()]}
    if kind is _Remote:
        return {"h": object.__getattribute__(value, "_handle")}
    raise TypeError(f"the test passes a {kind.__name__} to the program; only plain values cross")


class _Remote:
    """An object that lives in the program's process. Equal only to itself: the program cannot
    make it equal an expected value."""

    __slots__ = ("_link", "_handle")

    def __init__(self, link: _Link, handle: int) -> None:
        object.__setattr__(self, "_link", link)
        object.__setattr__(self, "_handle", handle)

    def _ask(self, op: str, **fields):
        return object.__getattribute__(self, "_link").ask(op, h=object.__getattribute__(self, "_handle"), **fields)

    def __getattr__(self, name: str):
        return self._ask("getattr", name=name)

    def __setattr__(self, name: str, value) -> None:
        self._ask("setattr", name=name, value=_encode(value))

    def __call__(self, *args, **kwargs):
        return self._ask("call", args=[_encode(a) for a in args], kwargs={k: _encode(v) for k, v in kwargs.items()})

    def __getitem__(self, key):
        return self._ask("getitem", key=_encode(key))

    def __setitem__(self, key, value) -> None:
        self._ask("setitem", key=_encode(key), value=_encode(value))

    def __len__(self) -> int:
        value = self._ask("len")
        if type(value) is not int:
            raise TypeError("the program's __len__ returned no int")
        return value

    def __bool__(self) -> bool:
        value = self._ask("bool")
        if type(value) is not bool:
            raise TypeError("the program's __bool__ returned no bool")
        return value

    def __contains__(self, item) -> bool:
        return self._ask("contains", item=_encode(item)) is True

    def __iter__(self):
        iterator = self._ask("iter")
        while True:
            try:
                yield iterator._ask("next")
            except StopIteration:
                return

    def __repr__(self) -> str:
        return str(self._ask("repr"))

    def __str__(self) -> str:
        return str(self._ask("str"))

    def __eq__(self, other) -> bool:
        return type(other) is _Remote and object.__getattribute__(other, "_handle") == object.__getattribute__(self, "_handle")

    def __ne__(self, other) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash(object.__getattribute__(self, "_handle"))


class _TestGlobals(dict):
    """The test's globals: its own names first, then the built-ins, then the program's globals."""

    def __init__(self, link: _Link) -> None:
        super().__init__()
        self.link = link

    def __missing__(self, name: str):
        builtins = __import__("builtins")
        if hasattr(builtins, name):
            return getattr(builtins, name)
        return self.link.ask("global", name=name)


def _judge(prelude: str, test: str, request_fd: int, reply_fd: int) -> dict:
    """Run `test` against the program's process; passed when it runs to its end without exception."""
    link = _Link(request_fd, reply_fd)
    try:
        hello = link.receive()
    except _ProgramGone as exc:
        return {"passed": False, "reason": f"the program did not load: {exc}"}
    if hello.get("loaded") is not True:
        return {"passed": False, "reason": f"the program did not load: {str(hello.get('error', ''))[:1000]}"}
    namespace = _TestGlobals(link)
    namespace["__name__"] = "__main__"
    try:
        exec(compile(prelude, "<prelude>", "exec"), namespace)
        exec(compile(test, "<test>", "exec"), namespace)
    except _ProgramGone as exc:
        return {"passed": False, "reason": f"the program stopped answering: {exc}"}
    except BaseException as exc:
        return {"passed": False, "reason": f"{type(exc).__name__}: {exc}"[:1000]}
    return {"passed": True, "reason": ""}


# ----------------------------------------------------------------------------- small helpers


def _receive(stream) -> dict:
    line = stream.readline(65536)
    try:
        message = json.loads(line) if line else {}
    except ValueError:
        message = {}
    return message if isinstance(message, dict) else {}


def _send(fd: int, message: dict) -> None:
    os.write(fd, json.dumps(message).encode() + b"\n")


def _report(fd: int, message: dict) -> None:
    try:
        os.write(fd, json.dumps(message).encode() + b"\n")
    except OSError:
        pass


def _write_file(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _read_text(path: str, default):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return default


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except OSError:
        pass


def _set_limit(name: str, soft: int, hard: int | None = None) -> None:
    """Lower a resource limit, as far as this platform and the current hard limit allow."""
    import resource

    if not hasattr(resource, name):
        return
    limit = getattr(resource, name)
    hard = soft if hard is None else hard
    current = resource.getrlimit(limit)[1]
    if current != resource.RLIM_INFINITY:
        soft, hard = min(soft, current), min(hard, current)
    resource.setrlimit(limit, (soft, hard))


@functools.cache
def _libc():
    if not _LINUX:
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    return libc


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    import ctypes

    args = [None if s is None else s.encode() for s in (source, target, fstype)]
    if _libc().mount(*args, flags, None if data is None else data.encode()) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {target}: {os.strerror(errno)}")


def _prctl(option: int, value: int) -> int:
    libc = _libc()
    return -1 if libc is None else libc.prctl(option, value, 0, 0, 0)


if __name__ == "__main__":
    _launch(json.loads(sys.argv[1]))

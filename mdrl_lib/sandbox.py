"""Run untrusted Python programs in a sandbox and score them against unit tests.

Introduced in notebook ``00_toy_world`` as the Code domain's reward (the fraction of a
problem's unit tests that a generated program passes) and used at full scale for the
KlearReasoner unit tests. Standard library only.

Each program runs as ``python -I -S main.py`` in a fresh temporary directory, with an
empty environment (only PATH and LANG), in its own session, under resource limits
(wall clock, CPU time, address space, file size, open files, processes; no core
dumps), with stdout and stderr capped. Running as root on Linux it is also:

* run as a fresh unprivileged uid, unique to the run, so the process limit applies,
  it cannot signal or read the environment of other processes, and every process it
  leaves behind is killed when it ends;
* in new mount, network and IPC namespaces: no network, and private size-limited
  tmpfs over its working directory and the world-writable directories (``/tmp``,
  ``/var/tmp``, ``/dev/shm``, ``/run/lock``), so it cannot write outside them.

It can still read world-readable files and list the host's processes in /proc.
Without root (a student's laptop) only the limits apply, and on Linux the processes
the program leaves behind are killed; if namespaces are not permitted to root (a
container without CAP_SYS_ADMIN) everything but the namespaces applies.

This module is also the launcher: ``python -I -S sandbox.py CONFIG`` sets the
sandbox up, runs the program as its child and reports how it ended.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import os
import select
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

SANDBOX_UID_BASE = 1 << 30
"""Sandboxed programs run as uids from here up (root only): one fresh uid per run."""

_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
_MASKED_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
_TMPFS = "size=16m,nr_inodes=4096"
_MAX_FILE_BYTES = 16 << 20
_MAX_OPEN_FILES = 128
_STOP_GRACE_S = 1.0

_CLONE_NEWNS, _CLONE_NEWIPC, _CLONE_NEWNET = 0x00020000, 0x08000000, 0x40000000
_MS_NOSUID, _MS_NODEV, _MS_BIND, _MS_MOVE, _MS_REC, _MS_PRIVATE = 2, 4, 4096, 8192, 16384, 1 << 18
_PR_SET_PDEATHSIG, _PR_SET_CHILD_SUBREAPER = 1, 36

_LINUX = sys.platform.startswith("linux")
_run_ids = itertools.count()


class SandboxError(RuntimeError):
    """The sandbox itself could not be set up (not a failure of the program)."""


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

    ``returncode`` is None when the sandbox killed the program (timeout or too much
    output), negative (minus the signal) when a signal ended it otherwise. Each of
    stdout and stderr keeps at most `max_output_bytes`; a program printing more is
    killed and ``output_truncated`` is set. `max_processes` counts the program's
    processes and threads, itself included. Raises SandboxError when the sandbox
    itself cannot be set up, rather than blaming the program.
    """
    start = time.monotonic()
    workdir = tempfile.mkdtemp(prefix="mdrl-sandbox-")
    status_read, status_write = os.pipe()
    try:
        with open(os.path.join(workdir, "main.py"), "w", encoding="utf-8", errors="replace") as f:
            f.write(source)
        config = {
            "uid": _fresh_uid() if os.geteuid() == 0 else None,
            "cpu_s": max(1, math.ceil(timeout_s)),
            "memory_mb": memory_mb,
            "max_processes": max_processes,
            "status_fd": status_write,
            # Resolved here: inside the sandbox /tmp is masked, and a venv there would vanish.
            "executable": os.path.realpath(sys.executable),
        }
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", os.path.abspath(__file__), json.dumps(config)],
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
        deadline = start + timeout_s
        reason = "interrupted"
        try:
            stdout, stderr, reason = _communicate(proc, stdin.encode("utf-8", "replace"), deadline, max_output_bytes)
        finally:
            killed = _finish(proc, deadline, kill_now=reason is not None)
        os.set_blocking(status_read, False)
        try:
            setup_error = os.read(status_read, 65536)
        except BlockingIOError:
            setup_error = b""
    finally:
        for fd in (status_read, status_write):
            if fd >= 0:
                os.close(fd)
        shutil.rmtree(workdir, ignore_errors=True)
    if setup_error:
        raise SandboxError(setup_error.decode("utf-8", "replace"))
    return SandboxResult(
        returncode=None if killed else proc.returncode,
        stdout=stdout.decode("utf-8", "replace"),
        stderr=stderr.decode("utf-8", "replace"),
        timed_out=reason == "timeout" or (killed and reason is None),
        output_truncated=reason == "overflow",
        seconds=time.monotonic() - start,
    )


def run_tests(program: str, tests: list[dict], *, timeout_s: float = 5.0, **limits) -> list[bool]:
    """Whether `program` passes each test: run on the test's "input", its stripped stdout equals the stripped "output"."""
    results = []
    for test in tests:
        result = run_python(program, stdin=test["input"], timeout_s=timeout_s, **limits)
        passed = result.ok and not result.output_truncated and result.stdout.strip() == str(test["output"]).strip()
        results.append(passed)
    return results


def fraction_passed(program: str, tests: list[dict], **limits) -> float:
    """The fraction of `tests` that `program` passes, in [0, 1]; 0.0 when there are no tests."""
    if not tests:
        return 0.0
    return sum(run_tests(program, tests, **limits)) / len(tests)


# ----------------------------------------------------------------------------- host side


def _fresh_uid() -> int:
    """A uid no other sandbox run uses at the same time: from this process's pid and a counter."""
    return SANDBOX_UID_BASE + (os.getpid() % (1 << 22)) * 256 + next(_run_ids) % 256


def _communicate(proc: subprocess.Popen, data: bytes, deadline: float, cap: int) -> tuple[bytes, bytes, str | None]:
    """Feed `data` to the program and read its stdout and stderr until they close or it exits.

    Returns the two outputs and why reading stopped early: "timeout", "overflow" (an
    output passed `cap` bytes) or None.
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


def _finish(proc: subprocess.Popen, deadline: float, kill_now: bool) -> bool:
    """Wait for the launcher until `deadline` (or stop it now), kill its process group, reap it.

    Returns whether the program had to be killed. The launcher is asked first (SIGTERM)
    so that it can kill everything the program started.
    """
    killed = kill_now or not _wait_for_exit(proc, deadline)
    if killed:
        _signal(proc.pid, signal.SIGTERM)
        _wait_for_exit(proc, time.monotonic() + _STOP_GRACE_S)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    proc.wait()
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        pipe.close()
    return killed


def _has_exited(proc: subprocess.Popen) -> bool:
    """Whether the launcher has exited, without reaping it (its pid, the group id, stays taken)."""
    if hasattr(os, "waitid"):
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    return proc.poll() is not None


def _wait_for_exit(proc: subprocess.Popen, deadline: float) -> bool:
    while not _has_exited(proc):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)
    return True


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except OSError:
        pass


# ----------------------------------------------------------------------------- launcher side


def _launch(config: dict) -> None:
    """Set the sandbox up, run main.py in it as a child, clean up and exit as the child did."""
    status_fd = config["status_fd"]
    os.set_inheritable(status_fd, False)
    uid = config["uid"]
    try:
        _set_limit("RLIMIT_CORE", 0)
        if uid is not None and not _isolate(uid):
            os.chown(".", uid, uid)
            os.chown("main.py", uid, uid)
        _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    except Exception as exc:
        _fail(status_fd, f"sandbox setup failed: {exc!r}")
    program = os.fork()
    if program == 0:
        _become_program(config, status_fd)
    signal.signal(signal.SIGTERM, lambda *_: _signal(program, signal.SIGKILL))
    _, status = os.waitpid(program, 0)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if uid is not None:
        _kill_all_processes_of(uid)
    elif _LINUX:
        _kill_descendants()
    _reap_children(block=uid is not None)
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        try:
            signal.signal(-code, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
        os.kill(os.getpid(), -code)
    os._exit(code if code >= 0 else 128 - code)


def _become_program(config: dict, status_fd: int) -> None:
    """In the forked child: apply the limits, drop privileges and exec the program's interpreter."""
    uid = config["uid"]
    executable = config["executable"]
    try:
        nproc = config["max_processes"]
        if uid is None and _LINUX:
            nproc += _tasks_of(os.getuid())
        _set_limit("RLIMIT_CPU", config["cpu_s"], config["cpu_s"] + 1)
        _set_limit("RLIMIT_AS", config["memory_mb"] << 20)
        _set_limit("RLIMIT_FSIZE", _MAX_FILE_BYTES)
        _set_limit("RLIMIT_NOFILE", _MAX_OPEN_FILES)
        if uid is not None or _LINUX:
            _set_limit("RLIMIT_NPROC", nproc)
        if uid is not None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        os.execv(executable, [executable, "-I", "-S", "main.py"])
    except BaseException as exc:
        _fail(status_fd, f"could not start {executable} as uid {uid or os.getuid()}: {exc!r}")


def _isolate(uid: int) -> bool:
    """Enter new mount, network and IPC namespaces and mount private tmpfs; False when not permitted."""
    libc = _libc()
    if libc is None or libc.unshare(_CLONE_NEWNS | _CLONE_NEWNET | _CLONE_NEWIPC) != 0:
        return False
    os.umask(0o022)
    workdir = os.getcwd()
    with open("main.py", "rb") as f:
        program = f.read()
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)
    for path in _MASKED_DIRS:
        if os.path.isdir(path) and not os.path.islink(path):
            _mount("tmpfs", path, "tmpfs", _MS_NOSUID | _MS_NODEV, f"{_TMPFS},mode=1777")
    _expose_interpreter()
    os.makedirs(workdir, exist_ok=True)
    _mount("tmpfs", workdir, "tmpfs", _MS_NOSUID | _MS_NODEV, f"{_TMPFS},mode=0700,uid={uid},gid={uid}")
    os.chdir(workdir)
    with open("main.py", "wb") as f:
        f.write(program)
    return True


def _expose_interpreter() -> None:
    """Make the interpreter's installation reachable for the sandbox uid when a private directory hides it.

    (For instance pyenv under /root: a tmpfs replaces /root and the installation is moved back in.)
    """
    prefix = os.path.realpath(sys.base_prefix)
    parts = prefix.strip("/").split("/")
    ancestors = ["/" + "/".join(parts[:i]) for i in range(1, len(parts))]
    hidden = [path for path in ancestors if not os.stat(path).st_mode & 0o001]
    if not hidden:
        return
    stage = "/tmp/.mdrl-python"
    os.mkdir(stage, 0o755)
    _mount(prefix, stage, None, _MS_BIND | _MS_REC)
    _mount("tmpfs", hidden[0], "tmpfs", _MS_NOSUID | _MS_NODEV, "size=1m,mode=0755")
    os.makedirs(prefix, 0o755, exist_ok=True)
    _mount(stage, prefix, None, _MS_MOVE)
    os.rmdir(stage)


def _kill_all_processes_of(uid: int) -> None:
    """SIGKILL every process of `uid` at once: kill(-1) from a helper that has become that uid."""
    helper = os.fork()
    if helper == 0:
        try:
            os.setuid(uid)
            os.kill(-1, signal.SIGKILL)
        finally:
            os._exit(0)
    os.waitpid(helper, 0)


def _kill_descendants(limit_s: float = 0.5) -> None:
    """SIGKILL every descendant of the launcher, found through /proc, until none is left (without root).

    Orphans are reparented to the launcher (a child subreaper), so a program's processes
    stay its descendants even after ``setsid``.
    """
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        children: dict[int, list[int]] = {}
        for name in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    parent = int(f.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(parent, []).append(int(name))
        descendants, stack = [], [os.getpid()]
        while stack:
            found = children.get(stack.pop(), [])
            descendants += found
            stack += found
        if not descendants:
            return
        for pid in descendants:
            _signal(pid, signal.SIGKILL)
        _reap_children(block=False)


def _reap_children(block: bool) -> None:
    """Reap the orphans that were reparented to the launcher (a child subreaper)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _tasks_of(uid: int) -> int:
    """How many processes and threads `uid` runs, from /proc (RLIMIT_NPROC counts them all)."""
    count = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}").st_uid == uid:
                    count += len(os.listdir(f"/proc/{name}/task"))
            except OSError:
                pass
    return count


def _set_limit(name: str, soft: int, hard: int | None = None) -> None:
    """Lower a resource limit, as far as this platform and the current hard limit allow."""
    import resource

    if not hasattr(resource, name):
        return
    limit = getattr(resource, name)
    hard = soft if hard is None else hard
    current = resource.getrlimit(limit)[1]
    if current != resource.RLIM_INFINITY and os.geteuid() != 0:
        soft, hard = min(soft, current), min(hard, current)
    try:
        resource.setrlimit(limit, (soft, hard))
    except (ValueError, OSError):
        pass


@functools.cache
def _libc():
    if not _LINUX:
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    return libc


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    import ctypes

    args = [None if s is None else s.encode() for s in (source, target, fstype)]
    if _libc().mount(*args, flags, None if data is None else data.encode()) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {target}: {os.strerror(errno)}")


def _prctl(option: int, value: int) -> None:
    libc = _libc()
    if libc is not None:
        libc.prctl(option, value, 0, 0, 0)


def _fail(status_fd: int, message: str) -> None:
    os.write(status_fd, message.encode("utf-8", "replace"))
    os._exit(125)


if __name__ == "__main__":
    _launch(json.loads(sys.argv[1]))

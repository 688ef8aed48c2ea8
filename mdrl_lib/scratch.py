"""Scratch directories in the system temp dir, named by the process that made them, and their cleanup.

Introduced in notebook ``00_toy_world`` (opening the kit cleans up after a killed run). A scratch
directory is ``<tempfile.gettempdir()>/<prefix>-<pid>-<random>``: the creating process's id is in the
name, so a later run can tell a directory whose owner died (left behind by a kill) from one still in
use, and remove only the former. GRPO's trainer output (``mdrl-grpo``) and the code sandbox's work
directories (``mdrl-sandbox``) are named this way; :class:`mdrl_lib.store.Store` cleans both on opening.
"""
from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
from pathlib import Path

GRPO_PREFIX = "mdrl-grpo"
SANDBOX_PREFIX = "mdrl-sandbox"
ALONG_PREFIX = "mdrl-along"  # checkpoints along a stage, before scripts/grpo_stage.py stores them
SCRATCH_PREFIXES: tuple[str, ...] = (GRPO_PREFIX, SANDBOX_PREFIX, ALONG_PREFIX)

_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*[A-Za-z0-9_]$|^[A-Za-z0-9]$")
_SUFFIX = r"-(\d+)-([A-Za-z0-9_]+)"  # mkdtemp's random part is letters, digits and "_", never "-"


def scratch_dir(prefix: str) -> Path:
    """Create and return a fresh directory ``<tmp>/<prefix>-<pid>-<random>`` (mode 0700).

    ``prefix`` is letters, digits, ``-`` and ``_`` (not ending in ``-``), e.g. ``"mdrl-grpo"``. The
    caller removes it when done; if the process is killed first, :func:`remove_abandoned` removes it
    on a later run.
    """
    _check_prefix(prefix)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}-{os.getpid()}-", dir=tempfile.gettempdir()))


def remove_abandoned(prefix: str) -> list[Path]:
    """Remove the scratch directories of ``prefix`` whose creating process is no longer alive.

    Only entries of ``tempfile.gettempdir()`` named exactly ``<prefix>-<pid>-<random>`` that are real
    directories (not links) owned by the current user are considered; a live pid (this process's
    included) keeps its directory. Returns the directories removed, sorted. On a platform without
    user ids (Windows) it removes nothing.
    """
    _check_prefix(prefix)
    if not hasattr(os, "geteuid"):
        return []
    pattern = re.compile(re.escape(prefix) + _SUFFIX)
    root = Path(tempfile.gettempdir())
    removed = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return []
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None:
            continue
        pid = int(match.group(1))
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or pid <= 0 or pid_alive(pid):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(Path(entry.path))
    return sorted(removed)


def pid_alive(pid: int) -> bool:
    """Whether a process with id ``pid`` exists on this machine (one of another user counts)."""
    if pid <= 0:
        raise ValueError(f"pid must be a positive process id, got {pid}")
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _check_prefix(prefix: str) -> None:
    if not isinstance(prefix, str) or not _PREFIX.match(prefix):
        raise ValueError(f"scratch prefix must be letters, digits, '-' and '_' and not end in '-', "
                         f"e.g. {GRPO_PREFIX!r}; got {prefix!r}")

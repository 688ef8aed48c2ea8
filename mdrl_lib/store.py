"""The run directory: cached artifacts written atomically, each with a JSON manifest, built once.

Introduced in notebook ``00_toy_world``. An artifact is a directory ``<root>/<key>/`` holding its
files (safetensors checkpoints, tables) and ``manifest.json``. It is built in a temporary directory
under ``<root>/.tmp/`` and renamed into place only once complete, so a crash at any point leaves
nothing that a later read takes for a finished artifact.

Several processes may share one root (two notebooks of one run, a sweep). A build holds the key's
lock, ``<root>/.locks/<key>.lock`` (an OS file lock, so a builder that dies releases it): one process
builds, any other asking for the same key waits and then reads the finished artifact. A finished
artifact (a directory with a manifest) is never deleted or replaced; a directory without a manifest
is debris of an interrupted older writer and is replaced, only under the key's lock. The store never
removes a lock file (they are empty): removing one could let two processes lock different inodes.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

from filelock import FileLock, Timeout

from mdrl_lib.scratch import SCRATCH_PREFIXES, pid_alive, remove_abandoned

MANIFEST = "manifest.json"
WAIT_LOG_SECONDS = 30.0

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Artifact:
    """A finished artifact: its cache key, directory and manifest."""

    key: str
    path: Path
    manifest: dict

    @property
    def metrics(self) -> dict:
        return self.manifest.get("metrics", {})


def cache_key(kind: str, fields: Mapping[str, Any]) -> str:
    """``<kind>-<12 hex digits>``: a hash of the canonical JSON of exactly the fields given."""
    if not kind.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"artifact kind must be alphanumeric (with - or _), got {kind!r}")
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=_jsonable)
    return f"{kind}-{hashlib.sha256(canonical.encode()).hexdigest()[:12]}"


class Store:
    """Artifacts under one root directory, built once (across processes) and then served from disk.

    ``lock_timeout``: seconds a request waits for another process's build of the same key before
    raising TimeoutError; None waits as long as that build takes. Opening a store removes what killed
    runs left behind: its own unfinished builds and the GRPO / sandbox scratch directories
    (:mod:`mdrl_lib.scratch`) of processes no longer alive.
    """

    def __init__(self, root: str | os.PathLike, lock_timeout: float | None = None) -> None:
        if lock_timeout is not None and not lock_timeout >= 0:
            raise ValueError(f"lock_timeout must be None (wait as long as the build takes) or >= 0 seconds, "
                             f"got {lock_timeout!r}")
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.lock_timeout = lock_timeout
        self._tmp = self.root / ".tmp"
        self._locks = self.root / ".locks"
        self._remove_abandoned_builds()
        for prefix in SCRATCH_PREFIXES:
            remove_abandoned(prefix)

    def path(self, key: str) -> Path:
        return self.root / key

    def lock_path(self, key: str) -> Path:
        """The file whose OS lock a build of ``key`` holds."""
        return self._locks / f"{key}.lock"

    def get(self, key: str) -> Artifact | None:
        """The finished artifact under ``key``, or None. Needs no lock: a finished artifact never changes."""
        manifest_path = self.path(key) / MANIFEST
        if not manifest_path.is_file():
            return None
        return Artifact(key, self.path(key), json.loads(manifest_path.read_text()))

    def get_or_create(self, key: str, build: Callable[[Path], Mapping[str, Any] | None], *,
                      config: Mapping[str, Any], seed: int) -> Artifact:
        """Return the artifact under ``key``, building it first if it is not cached.

        ``build(directory)`` writes the artifact's files into ``directory`` and returns its metrics.
        The manifest records ``config``, ``seed``, the kit version, the metrics, the seconds taken and
        the building process (``built_by_pid``). If another process (or thread) is building ``key``,
        this waits for it and returns its artifact without building.
        """
        found = self.get(key)
        if found is not None:
            return found
        with self._key_lock(key):
            found = self.get(key)  # built by whoever held the lock before us
            if found is not None:
                return found
            return self._build(key, build, config=config, seed=seed)

    def keys(self) -> list[str]:
        """Keys of every finished artifact, sorted."""
        return sorted(p.name for p in self.root.iterdir() if (p / MANIFEST).is_file())

    def _build(self, key: str, build: Callable[[Path], Mapping[str, Any] | None], *,
               config: Mapping[str, Any], seed: int) -> Artifact:
        """Build ``key`` in a temporary directory and publish it; the caller holds the key's lock."""
        self._tmp.mkdir(exist_ok=True)
        work = self._tmp / f"{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        work.mkdir()
        logger.info("building %s", key, extra={"store_event": "building", "store_key": key})
        try:
            start = time.perf_counter()
            metrics = build(work) or {}
            manifest = {
                "key": key,
                "config": dict(config),
                "seed": seed,
                "kit_version": _kit_version(),
                "metrics": dict(metrics),
                "seconds": round(time.perf_counter() - start, 3),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "built_by_pid": os.getpid(),
            }
            write_json_atomic(work / MANIFEST, manifest)
            _fsync_dir(work)
            published = self._publish(key, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if published:
            logger.info("built %s in %.1f s", key, manifest["seconds"],
                        extra={"store_event": "built", "store_key": key})
        else:
            logger.warning("built %s, but another writer had finished it first; kept theirs", key,
                           extra={"store_event": "discarded", "store_key": key})
        return self.get(key)

    def _publish(self, key: str, work: Path) -> bool:
        """Rename the finished ``work`` directory to ``key``'s path; the caller holds the key's lock.

        A finished artifact already there (written by a writer that did not take the lock) is kept and
        ``work`` is left for the caller to discard: returns False. A directory there without a
        manifest is debris and is replaced.
        """
        final = self.path(key)
        if self.get(key) is not None:
            return False
        if final.exists() or final.is_symlink():
            logger.info("replacing %s, a directory without a manifest", final)
            if final.is_dir() and not final.is_symlink():
                shutil.rmtree(final)
            else:
                final.unlink()
        try:
            os.rename(work, final)
        except OSError:
            if self.get(key) is None:
                raise
            return False
        _fsync_dir(self.root)
        return True

    def _key_lock(self, key: str):
        return _KeyLock(self, key)

    def _remove_abandoned_builds(self) -> None:
        if not self._tmp.is_dir():
            return
        for entry in self._tmp.iterdir():
            pid = entry.name.split(".")[-2] if entry.name.count(".") >= 2 else ""
            if not (pid.isdigit() and int(pid) > 0 and pid_alive(int(pid))):
                shutil.rmtree(entry, ignore_errors=True)


_building = threading.local()  # keys this thread holds the lock of, to turn a self-wait into an error


class _KeyLock:
    """The OS file lock of one key, held while building it; waits with a log line every 30 s."""

    def __init__(self, store: Store, key: str) -> None:
        self.store, self.key = store, key
        self.path = store.lock_path(key)
        self._lock = FileLock(str(self.path))

    def __enter__(self) -> "_KeyLock":
        held = _building.__dict__.setdefault("keys", set())
        if (self.store.root, self.key) in held:
            raise RuntimeError(f"building {self.key} asked for {self.key} again: a build must not depend on "
                               f"its own artifact")
        self.path.parent.mkdir(exist_ok=True)
        start = time.monotonic()
        timeout = self.store.lock_timeout
        try:
            self._lock.acquire(blocking=False)
        except Timeout:
            logger.info("waiting for %s: another process is building it (lock %s)", self.key, self.path,
                        extra={"store_event": "waiting", "store_key": self.key})
            while True:
                waited = time.monotonic() - start
                step = WAIT_LOG_SECONDS if timeout is None else min(WAIT_LOG_SECONDS, max(timeout - waited, 0.0))
                try:
                    self._lock.acquire(timeout=step)
                    break
                except Timeout:
                    waited = time.monotonic() - start
                    if timeout is not None and waited >= timeout:
                        raise TimeoutError(
                            f"waited {waited:.1f} s for {self.key}, which another process is building "
                            f"(lock {self.path}); its lock is released when that process ends. Raise "
                            f"Store(lock_timeout=...) or pass None to wait as long as the build takes") from None
                    logger.info("still waiting for %s after %.0f s", self.key, waited,
                                extra={"store_event": "waiting", "store_key": self.key})
        held.add((self.store.root, self.key))
        return self

    def __exit__(self, *exc) -> None:
        _building.keys.discard((self.store.root, self.key))
        self._lock.release()


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` atomically: a uniquely named temporary file in the same directory,
    synced, then renamed over ``path``; a reader never sees half a file, and a failure leaves nothing behind.
    The kit's one JSON writer (manifests, claim records)."""
    handle = tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}-", suffix=".part", delete=False)
    try:
        with handle:
            json.dump(data, handle, indent=2, sort_keys=True, default=_jsonable)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__} in a manifest")


def _kit_version() -> str:
    from mdrl_lib import __version__

    return __version__

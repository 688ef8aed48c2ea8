"""The run directory: cached artifacts written atomically, each with a JSON manifest.

Introduced in notebook ``00_toy_world``. An artifact is a directory ``<root>/<key>/`` holding its
files (safetensors checkpoints, tables) and ``manifest.json``. It is built in a temporary directory
under ``<root>/.tmp/`` and renamed into place only once complete, so a crash at any point leaves
nothing that a later read takes for a finished artifact.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

MANIFEST = "manifest.json"


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
    """Artifacts under one root directory, built once and then served from disk."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._tmp = self.root / ".tmp"
        self._remove_abandoned_builds()

    def path(self, key: str) -> Path:
        return self.root / key

    def get(self, key: str) -> Artifact | None:
        """The finished artifact under ``key``, or None."""
        manifest_path = self.path(key) / MANIFEST
        if not manifest_path.is_file():
            return None
        return Artifact(key, self.path(key), json.loads(manifest_path.read_text()))

    def get_or_create(self, key: str, build: Callable[[Path], Mapping[str, Any] | None], *,
                      config: Mapping[str, Any], seed: int) -> Artifact:
        """Return the artifact under ``key``, building it first if it is not cached.

        ``build(directory)`` writes the artifact's files into ``directory`` and returns its metrics.
        The manifest records ``config``, ``seed``, the kit version, the metrics and the seconds taken.
        """
        found = self.get(key)
        if found is not None:
            return found
        self._tmp.mkdir(exist_ok=True)
        work = self._tmp / f"{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        work.mkdir()
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
            }
            _write_json_atomic(work / MANIFEST, manifest)
            _fsync_dir(work)
            if self.path(key).exists():
                shutil.rmtree(self.path(key))  # a directory without a manifest is debris, not an artifact
            try:
                os.rename(work, self.path(key))
            except OSError:
                if self.get(key) is None:
                    raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
        _fsync_dir(self.root)
        return self.get(key)

    def keys(self) -> list[str]:
        """Keys of every finished artifact, sorted."""
        return sorted(p.name for p in self.root.iterdir() if (p / MANIFEST).is_file())

    def _remove_abandoned_builds(self) -> None:
        if not self._tmp.is_dir():
            return
        for entry in self._tmp.iterdir():
            pid = entry.name.split(".")[-2] if entry.name.count(".") >= 2 else ""
            if not (pid.isdigit() and _alive(int(pid))):
                shutil.rmtree(entry, ignore_errors=True)


def _write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True, default=_jsonable)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


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


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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

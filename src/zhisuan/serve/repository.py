"""A versioned model repository on disk: ``ROOT/NAME/VERSION/`` package directories.

Writes are atomic: a package is built in ``ROOT/.tmp-<pid>-<random>/``, its manifest is written
last, and the directory is renamed into place; removal renames to ``ROOT/.trash-<pid>-<random>``
first. A crash therefore never leaves a half package where :meth:`Repository.list` or the server
looks, and the leftovers of a dead process are deleted the next time the repository is opened.
Version numbers are given out under an exclusive lock (``ROOT/.lock``, ``flock``), so concurrent
adds of the same name get distinct versions. The server keeps its own state beside the models
(``ROOT/logs``, ``ROOT/.rollouts.json``), so those names are not model names
(:data:`~zhisuan.serve.package.RESERVED_NAMES`), and removing a model removes only its version
directories, never other files in its folder.

>>> repo = Repository("models")  # doctest: +SKIP
>>> repo.add("efficientnet-lite0", name="effnet").version  # doctest: +SKIP
1
>>> [(m["name"], m["versions"]) for m in repo.list()]  # doctest: +SKIP
[('effnet', [1])]
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from zhisuan.errors import UserError
from zhisuan.progress import Progress, no_progress
from zhisuan.serve.package import (
    MANIFEST,
    Package,
    _check_name,
    _check_new_name,
    _check_version,
    _fsync_dir,
    load_package,
    read_manifest,
    stage_package,
)

__all__ = ["Repository"]

_VERSION = re.compile(r"^[1-9][0-9]{0,8}$")
_LEFTOVER = re.compile(r"^\.(tmp|trash)-(\d+)-")
_LOCK = ".lock"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


class Repository:
    """Models by name and integer version, each a package verified when it is opened."""

    def __init__(self, root: str | Path, *, create: bool = True) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise UserError(f"repository {self.root} is not a directory")
        if not self.root.exists():
            if not create:
                raise UserError(f"repository not found: {self.root}")
            self.root.mkdir(parents=True)
        self.cleanup()

    def __repr__(self) -> str:
        return f"Repository({str(self.root)!r})"

    # -- housekeeping -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.root / _LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def cleanup(self) -> list[str]:
        """Delete staging and trash directories left by processes that no longer run; return their names."""
        removed = []
        for entry in self.root.iterdir():
            match = _LEFTOVER.match(entry.name)
            if match and entry.is_dir() and not _pid_alive(int(match.group(2))):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry.name)
        return removed

    def _new_dir(self, kind: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=f".{kind}-{os.getpid()}-", dir=self.root))

    # -- reading ----------------------------------------------------------------------------------

    def path(self, name: str, version: int) -> Path:
        return self.root / _check_name(name) / str(_check_version(version))

    def names(self) -> list[str]:
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".") and self.versions(p.name)
        )

    def versions(self, name: str) -> list[int]:
        """The versions of ``name`` (ascending); empty when there is no such model."""
        folder = self.root / _check_name(name)
        if not folder.is_dir():
            return []
        return sorted(
            int(p.name) for p in folder.iterdir() if _VERSION.match(p.name) and (p / MANIFEST).is_file()
        )

    def _resolve(self, name: str, version: int | None) -> int:
        versions = self.versions(name)
        if not versions:
            known = ", ".join(self.names()) or "none"
            raise UserError(f"no model {name!r} in repository {self.root} (models: {known})")
        if version is None:
            return versions[-1]
        _check_version(version)
        if version not in versions:
            raise UserError(f"{name} has no version {version} in {self.root} (versions: {', '.join(map(str, versions))})")
        return version

    def package(self, name: str, version: int | None = None) -> Package:
        """The verified package of ``name`` at ``version`` (the latest when None)."""
        return load_package(self.path(name, self._resolve(name, version)))

    def list(self) -> list[dict[str, Any]]:
        """One entry per model: its versions and the latest version's format, runtime and signature.

        Manifests are read and their self-digest checked, but model files are not hashed here
        (that happens on :meth:`show` and on load); a broken manifest shows up as ``error``.
        """
        models = []
        for name in self.names():
            versions = self.versions(name)
            entry: dict[str, Any] = {"name": name, "versions": versions, "latest": versions[-1]}
            try:
                manifest, _ = read_manifest(self.path(name, versions[-1]))
            except UserError as exc:
                entry["error"] = str(exc)
            else:
                source = manifest.metadata.get("source", {})
                entry.update({
                    "format": str(manifest.format),
                    "runtime": manifest.runtime,
                    "inputs": [s.to_dict() for s in manifest.inputs],
                    "outputs": [s.to_dict() for s in manifest.outputs],
                    "max_batch_size": manifest.batching.max_batch_size,
                    "source": source.get("zoo_model") or source.get("path"),
                    "created_at": manifest.metadata.get("created_at"),
                })
            models.append(entry)
        return models

    def show(self, name: str, version: int | None = None) -> dict[str, Any]:
        """The full manifest of one version after verifying every checksum, plus all versions."""
        package = self.package(name, version)
        return {**package.to_dict(), "verified": True, "versions": self.versions(name)}

    # -- writing ----------------------------------------------------------------------------------

    def add(
        self,
        model: str | os.PathLike[str],
        *,
        name: str,
        version: int | None = None,
        force: bool = False,
        progress: Progress = no_progress,
        **pack_options: Any,
    ) -> Package:
        """Package ``model`` as ``name`` at ``version`` (the next free one when None), atomically.

        ``pack_options`` are those of :func:`zhisuan.serve.package.pack` (``runtime``,
        ``batching``, ``preprocess``, ``postprocess``, ``metadata``, ``zoo_defaults``).
        ``progress`` is told what is being done. An existing version is replaced only with ``force``.
        """
        _check_new_name(name)
        if version is not None:
            _check_version(version)
            if not force and version in self.versions(name):
                raise UserError(f"{name} version {version} already exists in {self.root}; use --force to replace it")
        zoo_defaults = pack_options.pop("zoo_defaults", True)
        unknown = sorted(set(pack_options) - {"runtime", "batching", "preprocess", "postprocess", "metadata"})
        if unknown:
            raise TypeError(f"Repository.add() got unexpected options {unknown}")
        staging = self._new_dir("tmp")
        try:
            # The slow part (export, copy, hash) runs outside the lock; the version is taken under it.
            staged = stage_package(
                model, staging, name=name, zoo_defaults_enabled=zoo_defaults, progress=progress, **pack_options
            )
            with self._locked():
                existing = self.versions(name)
                chosen = version if version is not None else (existing[-1] + 1 if existing else 1)
                if chosen in existing and not force:
                    raise UserError(f"{name} version {chosen} already exists in {self.root}; use --force to replace it")
                staged.finish(chosen)
                staging.chmod(0o755)
                folder = self.root / name
                folder.mkdir(exist_ok=True)
                dest = folder / str(chosen)
                if dest.exists():
                    trash = self._new_dir("trash")
                    os.rename(dest, trash / "old")
                    os.rename(staging, dest)
                    shutil.rmtree(trash, ignore_errors=True)
                else:
                    os.rename(staging, dest)
                _fsync_dir(folder)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return load_package(dest)

    def remove(self, name: str, version: int | None = None) -> list[int]:
        """Remove one version, or every version of ``name`` when None; return the removed versions."""
        with self._locked():
            versions = self.versions(name)
            if version is None:
                self._resolve(name, None)
                removed = versions
            else:
                removed = [self._resolve(name, version)]
            folder = self.root / name
            owned = {str(v) for v in removed}
            if version is None and all(p.name in owned for p in folder.iterdir()):
                sources = [folder]  # gone from listings in one step
            else:  # the folder holds more (e.g. request logs of a --log-dir there): remove only the versions
                sources = [folder / v for v in sorted(owned)]
            trash = self._new_dir("trash")
            for i, source in enumerate(sources):
                os.rename(source, trash / str(i))
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
            _fsync_dir(self.root)
        shutil.rmtree(trash, ignore_errors=True)
        return removed

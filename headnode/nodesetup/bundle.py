"""The agent wheels a node installs from: the ``sdc`` wheel of a version and every wheel it
depends on, in one directory, so a node installs with ``pip --no-index`` and never needs PyPI.

SDC_AGENT_BUNDLE_DIR holds ``uploaded/`` (wheels stored with ``store_wheel``), ``built/``
(wheels of the checkout the head node runs from, one per source digest), ``deps/`` (the
dependency wheels, shared by every version) and ``bundles/<version>-<wheel digest>/`` (what
is sent)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from headnode.config import HeadnodeSettings
from headnode.nodesetup import checkout, wheels
from headnode.nodesetup.errors import NodeSetupError

PIP_TIMEOUT = 600
#: the file a bundle directory is complete with (written last)
COMPLETE = ".complete"


@dataclass(frozen=True)
class AgentBundle:
    version: str
    directory: Path
    #: file names in ``directory``, the sdc wheel first
    wheels: list[str]
    #: the Python (major.minor) the wheels were chosen for: the node needs the same
    python: str

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "directory": str(self.directory),
                "wheels": len(self.wheels), "python": self.python,
                "bytes": sum((self.directory / w).stat().st_size for w in self.wheels)}


def head_python() -> str:
    return f"{sys.version_info[0]}.{sys.version_info[1]}"


def store_wheel(settings: HeadnodeSettings, filename: str, data: bytes) -> str:
    """Keep an uploaded ``sdc`` wheel for ``prepare``; its version (BadWheel if it is not a
    wheel of sdc whose name and metadata agree)."""
    version = wheels.checked_version(filename, data)
    known = [p for p in _sdc_wheels(settings) if wheels.version_of(p.name) == version]
    if any(p.read_bytes() != data for p in known):
        # nodes with that release installed would never take the new content
        raise NodeSetupError("VersionExists", f"an other agent wheel of version {version} is "
                             "stored already: give the new one another version")
    _write_beside(_dir(settings, "uploaded") / filename, data)
    return version


def stored_versions(settings: HeadnodeSettings) -> list[str]:
    """The versions ``prepare`` can send: uploaded ones and ones built from a checkout."""
    found = {wheels.version_of(p.name) for p in _sdc_wheels(settings)}
    return sorted(v for v in found if v)


def prepare(settings: HeadnodeSettings, version: str | None = None) -> AgentBundle:
    """The bundle of ``version`` (a stored wheel, the latest if several have it), or of the
    checkout the head node runs from. Made once per sdc wheel, then reused."""
    if version is None:
        wheel = checkout.build_wheel(_dir(settings, "built"))
        version = wheels.version_of(wheel.name) or ""
    else:
        wheel = _stored_wheel(settings, version)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()[:16]
    directory = _dir(settings, "bundles") / f"{version}-{digest}"
    if not (directory / COMPLETE).exists():
        _assemble(settings, wheel, directory)
    names = (directory / COMPLETE).read_text().split()
    return AgentBundle(version, directory, names, head_python())


def _stored_wheel(settings: HeadnodeSettings, version: str) -> Path:
    if not re.fullmatch(wheels.VERSION, version):
        raise NodeSetupError("BadVersion", f"{version!r} is not a version")
    found = [p for p in _sdc_wheels(settings) if wheels.version_of(p.name) == version]
    if found:
        # a checkout built again after an edit: the latest build
        return max(found, key=lambda p: p.stat().st_mtime)
    known = ", ".join(stored_versions(settings)) or "none"
    raise NodeSetupError("NoSuchAgentVersion", f"no agent wheel of version {version} is "
                         f"stored (stored: {known}); upload one first "
                         "(PUT /ops/agent-bundles/<filename>)")


def _sdc_wheels(settings: HeadnodeSettings) -> list[Path]:
    uploaded = sorted(_dir(settings, "uploaded").glob("sdc-*.whl"))
    return uploaded + sorted(_dir(settings, "built").glob("*/sdc-*.whl"))


def _assemble(settings: HeadnodeSettings, wheel: Path, directory: Path) -> None:
    """The sdc wheel and its dependencies' into ``directory``: made aside, moved in whole
    (two jobs preparing the same version at once both end with one complete directory)."""
    deps = _dir(settings, "deps")
    work = Path(tempfile.mkdtemp(prefix=".assemble-", dir=directory.parent))
    try:
        began = time.monotonic()
        # From the shared cache alone first; the index only for what it lacks.
        if _pip_wheel(wheel, work, deps, offline=True).returncode != 0:
            result = _pip_wheel(wheel, work, deps, offline=False)
            if result.returncode != 0:
                raise NodeSetupError("BundleFailed", "pip could not gather the agent's "
                                     f"dependencies: {result.stderr[-1500:]}")
        names = sorted(p.name for p in work.glob("*.whl") if p.name != wheel.name)
        for name in names:
            _link_or_copy(work / name, deps / name)
            _share(deps / name, work / name)
        shutil.copyfile(wheel, work / wheel.name)
        (work / ".took").write_text(f"{time.monotonic() - began:.1f}\n")
        (work / COMPLETE).write_text("\n".join([wheel.name, *names]) + "\n")
        try:
            work.rename(directory)
        except OSError:
            if not (directory / COMPLETE).exists():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _pip_wheel(wheel: Path, out: Path, deps: Path,
               offline: bool) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(out),
            "--find-links", str(deps), *(["--no-index"] if offline else []), str(wheel)]
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    try:
        return subprocess.run(argv, capture_output=True, text=True, env=env,
                              timeout=PIP_TIMEOUT, check=False)
    except subprocess.TimeoutExpired as exc:
        raise NodeSetupError("BundleFailed", f"pip wheel still running after {PIP_TIMEOUT} "
                             "s") from exc


def _dir(settings: HeadnodeSettings, name: str) -> Path:
    path = settings.resolved_agent_bundle_dir / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def _link_or_copy(source: Path, target: Path) -> None:
    if target.exists():
        return
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _share(cached: Path, copy: Path) -> None:
    """Make ``copy`` a link to the cache's file: each bundle (one per version and source)
    then costs its sdc wheel only, not another ~25 MB of dependencies."""
    tmp = copy.with_name(f".{copy.name}.link")
    try:
        os.link(cached, tmp)
    except OSError:
        return  # another file system: the copy stays
    os.replace(tmp, copy)


def _write_beside(target: Path, data: bytes) -> None:
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)

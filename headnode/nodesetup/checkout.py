"""A wheel of the checkout the head node runs from, for nodes that run the same code: built
once per source (kept under built/<version>-<source digest>/), with the project's version.
A node that has a release of that version keeps it: to roll out changed code, bump the
version in pyproject.toml."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from headnode.nodesetup.errors import NodeSetupError

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("headnode", "workflows", "agents", "schemas", "sdccommon")
#: besides the packages, what the build reads (pyproject names README.md as the readme)
TOP_FILES = ("pyproject.toml", "README.md")
BUILD_TIMEOUT = 300


def build_wheel(built_dir: Path) -> Path:
    """The wheel of the checkout's current source, built unless it was already."""
    files = source_files()
    version = project_version()
    out = built_dir / f"{version}-{digest(files)[:12]}"
    wheel = out / f"sdc-{version}-py3-none-any.whl"
    if wheel.exists():
        return wheel
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=built_dir))
    try:
        _copy_source(files, work / "src")
        _pip_wheel(work / "src", work / "dist")
        built = work / "dist" / wheel.name
        if not built.exists():
            raise NodeSetupError("BundleFailed", f"pip built no {wheel.name}")
        out.mkdir(exist_ok=True)
        os.replace(built, wheel)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return wheel


def source_files() -> list[Path]:
    """What the wheel is made of, relative to the checkout's root, in a stable order."""
    if not all((ROOT / name).is_file() for name in TOP_FILES):
        raise NodeSetupError("NoCheckout", f"the head node does not run from a checkout "
                             f"(no {' or '.join(TOP_FILES)} in {ROOT}): upload an agent "
                             "wheel and give its version")
    found = [Path(name) for name in TOP_FILES]
    for package in PACKAGES:
        found += [p.relative_to(ROOT) for p in (ROOT / package).rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"]
    return sorted(found)


def digest(files: list[Path]) -> str:
    sha = hashlib.sha256()
    for relative in files:
        sha.update(str(relative).encode() + b"\0" + (ROOT / relative).read_bytes() + b"\0")
    return sha.hexdigest()


def project_version() -> str:
    with open(ROOT / "pyproject.toml", "rb") as source:
        return str(tomllib.load(source)["project"]["version"])


def _copy_source(files: list[Path], dest: Path) -> None:
    # A copy: building in the checkout would leave build/ and egg-info behind in it, and
    # the wheel is of the files digested, whatever is edited meanwhile.
    for relative in files:
        (dest / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / relative, dest / relative)


def _pip_wheel(source: Path, out: Path) -> None:
    argv = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir",
            str(out), str(source)]
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    try:
        result = subprocess.run(argv, capture_output=True, text=True, env=env,
                                timeout=BUILD_TIMEOUT, check=False)
    except subprocess.TimeoutExpired as exc:
        raise NodeSetupError("BundleFailed", f"building the agent's wheel took more than "
                             f"{BUILD_TIMEOUT} s") from exc
    if result.returncode != 0:
        raise NodeSetupError("BundleFailed", f"building the agent's wheel failed: "
                             f"{result.stderr[-1500:]}")

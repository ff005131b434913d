"""Build a real Debian image with mmdebstrap: minbase, openssh-server, iproute2 and
python3-minimal, the guest files of ``agents/guest`` (the init ``/usr/sbin/sdc-init`` and the
``mdata-get|list|put|delete`` tools, in /usr/sbin and /usr/bin), the default user
``debian``; no ssh host keys (the init makes them at first boot). Packed as a tar.gz with a
fixed gzip header, with its manifest.

A build is kept in the image cache (``SDC_IMAGE_CACHE``) under a key of its inputs (suite,
packages, the guest files, :data:`BUILDER_VERSION`): a later build of the same inputs reuses
it. Files of the agent package are read from disk, never imported: the head node does not
import the agent.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import hashlib
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from headnode.imagebuild import (
    BuildError,
    BuiltImage,
    gzip_reproducibly,
    image_file_path,
    image_uuid,
    write_manifest,
)

#: part of the cache key: change it whenever what a build makes changes in a way the other
#: inputs do not show
BUILDER_VERSION = "1"
DEFAULT_SUITE = "bookworm"
SUITE_VERSIONS = {"buster": "10", "bullseye": "11", "bookworm": "12", "trixie": "13"}
BASE_PACKAGES = ("openssh-server", "iproute2", "python3-minimal")
DEFAULT_USER = "debian"
#: file times in the image (SOURCE_DATE_EPOCH): 2024-01-01, fixed so that builds compare
SOURCE_DATE_EPOCH = 1704067200
BUILD_TIMEOUT_S = 1800
STDERR_TAIL = 25
PACKAGE_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+")
SUITE_NAME = re.compile(r"[a-z][a-z0-9-]{1,31}")
INIT = {"kind": "os", "args": ["/usr/sbin/sdc-init"], "stop_signal": "SIGTERM",
        "stop_timeout": 30}
MDATA_COMMANDS = ("get", "list", "put", "delete")
#: where each guest file goes in the image <- its path in the agent package (None: empty)
GUEST_TREE = (
    ("usr/lib/sdc/agents/__init__.py", None, 0o644),
    ("usr/lib/sdc/agents/backends/__init__.py", None, 0o644),
    ("usr/lib/sdc/agents/backends/linux/__init__.py", None, 0o644),
    ("usr/lib/sdc/agents/backends/linux/mdata_client.py", "backends/linux/mdata_client.py",
     0o644),
    ("usr/lib/sdc/agents/guest/__init__.py", "guest/__init__.py", 0o644),
    ("usr/lib/sdc/agents/guest/bootfiles.py", "guest/bootfiles.py", 0o644),
    ("usr/lib/sdc/agents/guest/sdc_init.py", "guest/sdc_init.py", 0o644),
    ("usr/lib/sdc/mdata-tool", "guest/mdata-tool", 0o755),
    ("usr/sbin/sdc-init", "guest/sdc-init", 0o755),
)
#: what minbase lacks that every machine wants; sdc-init rewrites both from its metadata
BASE_FILES = (
    ("etc/hosts", b"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n", 0o644),
    ("etc/hostname", b"debian\n", 0o644),
)
#: what a machine never needs: smaller images, faster imports
DPKG_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*",
                 "/usr/share/locale/*", "/usr/share/lintian/*")


def agents_dir() -> Path:
    spec = importlib.util.find_spec("agents")
    if spec is None or not spec.submodule_search_locations:
        raise BuildError("the agents package (the guest files) is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def guest_files() -> list[tuple[str, bytes, int]]:
    """(path in the image, content, mode) of every file the build adds."""
    source = agents_dir()
    files = [(path, b"" if rel is None else (source / rel).read_bytes(), mode)
             for path, rel, mode in GUEST_TREE]
    return files + list(BASE_FILES)


def check_inputs(suite: str, packages: list[str]) -> None:
    if not SUITE_NAME.fullmatch(suite):
        raise BuildError(f"suite {suite!r} is not a Debian suite name (e.g. bookworm)")
    for name in packages:
        if not PACKAGE_NAME.fullmatch(name):
            raise BuildError(f"--include: {name!r} is not a Debian package name")


def package_list(extra: list[str]) -> list[str]:
    return sorted(set(BASE_PACKAGES) | set(extra))


def cache_key(suite: str, packages: list[str], files: list[tuple[str, bytes, int]]) -> str:
    """The sha256 of everything a build is made of; mmdebstrap's arguments too, so that a
    changed hook or option is a new build without anyone bumping :data:`BUILDER_VERSION`."""
    digest = hashlib.sha256()
    packages = sorted(set(packages))
    inputs = {"builder": BUILDER_VERSION, "suite": suite, "packages": packages,
              "files": sorted((p, hashlib.sha256(c).hexdigest(), m) for p, c, m in files),
              "argv": mmdebstrap_argv(suite, packages, Path("STAGE"), Path("OUT"))}
    digest.update(json.dumps(inputs, sort_keys=True).encode())
    return digest.hexdigest()


def image_name(suite: str) -> str:
    return f"debian-{SUITE_VERSIONS.get(suite, suite)}"


def image_version(suite: str, key: str) -> str:
    return f"{SUITE_VERSIONS.get(suite, '0')}.0.{int(key[:8], 16)}"


def stage_guest_files(stage: Path, files: list[tuple[str, bytes, int]]) -> None:
    """The tree mmdebstrap's ``sync-in`` copies over the image's root."""
    stage.chmod(0o755)  # sync-in gives the image's / the mode of this directory
    for path, content, mode in files:
        target = stage / path
        target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        target.write_bytes(content)
        target.chmod(mode)
    for command in MDATA_COMMANDS:
        (stage / "usr/sbin" / f"mdata-{command}").symlink_to("/usr/lib/sdc/mdata-tool")
        # SmartOS's place is /usr/sbin; a Debian user's PATH has only the bin directories
        (stage / "usr/bin").mkdir(mode=0o755, exist_ok=True)
        (stage / "usr/bin" / f"mdata-{command}").symlink_to("/usr/lib/sdc/mdata-tool")
    for directory in stage.rglob("*"):
        if directory.is_dir():
            directory.chmod(0o755)


def mmdebstrap_argv(suite: str, packages: list[str], stage: Path, out_tar: Path) -> list[str]:
    argv = ["mmdebstrap", "--variant=minbase", f"--include={','.join(packages)}"]
    argv += [f"--dpkgopt=path-exclude={pattern}" for pattern in DPKG_EXCLUDES]
    argv += [
        f"--customize-hook=sync-in {stage} /",
        f'--customize-hook=chroot "$1" useradd --create-home --user-group --shell /bin/bash '
        f"--password '*' {DEFAULT_USER}",
        '--customize-hook=rm -f "$1"/etc/ssh/ssh_host_*',
        suite, str(out_tar)]
    return argv


def run_mmdebstrap(argv: list[str], progress: Callable[[str], None] | None) -> None:
    if shutil.which(argv[0]) is None:
        raise BuildError("mmdebstrap not found: install it (apt-get install mmdebstrap)")
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(SOURCE_DATE_EPOCH)}
    tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL)
    with subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          env=env) as proc:
        assert proc.stderr is not None
        for line in proc.stderr:
            tail.append(line.rstrip("\n"))
            if progress is not None:
                progress(line.rstrip("\n"))
        try:
            code = proc.wait(timeout=BUILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise BuildError(f"mmdebstrap took over {BUILD_TIMEOUT_S} s") from None
    if code != 0:
        raise BuildError(f"mmdebstrap failed (exit {code}):\n" + "\n".join(tail))


def unpacked_mib(tar_path: Path) -> int:
    """A ceiling of the root filesystem's size: file contents rounded up to 4 KiB blocks,
    and a block per entry (directories, links, inodes), plus a tenth for the filesystem."""
    total = 0
    with tarfile.open(tar_path) as tar:
        for member in tar:
            total += 4096 + (-(-member.size // 4096) * 4096 if member.isreg() else 0)
    return math.ceil(total * 1.1 / (1 << 20))


def manifest_for(suite: str, key: str, sha256: str, size: int, size_mb: int,
                 packages: list[str]) -> dict[str, Any]:
    name = image_name(suite)
    return {
        "uuid": image_uuid(name, sha256),
        "name": name,
        "version": image_version(suite, key),
        "os": "linux",
        "type": "lx-dataset",
        "description": f"Debian {suite} (minbase) built by mmdebstrap with "
                       f"{', '.join(packages)}; sdc-init boots it from its metadata",
        "size_mb": size_mb,
        "requirements": {},
        "tags": {"default_user": DEFAULT_USER},
        "init": dict(INIT),
        "files": [{"sha256": sha256, "size": size, "compression": "gzip", "format": "tar"}],
    }


def pack(tar_path: Path, out_dir: Path, suite: str, key: str,
         packages: list[str]) -> BuiltImage:
    """The tar.gz and manifest of mmdebstrap's tar in ``out_dir``."""
    name, version = image_name(suite), image_version(suite, key)
    file_path = image_file_path(out_dir, name, version)
    with open(tar_path, "rb") as src, open(file_path, "wb") as dst:
        gzip_reproducibly(src, dst, level=6)  # 9 takes twice as long for 1 % less
    digest = hashlib.sha256()
    with open(file_path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    manifest = manifest_for(suite, key, digest.hexdigest(), file_path.stat().st_size,
                            unpacked_mib(tar_path), packages)
    return BuiltImage(manifest, write_manifest(out_dir, manifest), file_path)


@contextlib.contextmanager
def cache_lock(cache_dir: Path, key: str) -> Iterator[None]:
    """One build of a key at a time (two test runs at once wait for each other)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / f".{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def cached(entry: Path) -> BuiltImage | None:
    manifests = sorted(entry.glob("*.json")) if entry.is_dir() else []
    if len(manifests) != 1:
        return None
    manifest = json.loads(manifests[0].read_text())
    file_path = image_file_path(entry, manifest["name"], manifest["version"])
    if not file_path.is_file() or file_path.stat().st_size != manifest["files"][0]["size"]:
        return None
    return BuiltImage(manifest, manifests[0], file_path)


def build_into_cache(cache_dir: Path, suite: str, packages: list[str], key: str,
                     files: list[tuple[str, bytes, int]],
                     progress: Callable[[str], None] | None) -> BuiltImage:
    entry = cache_dir / key
    for stale in cache_dir.glob(f".{key[:8]}-*"):  # a build of this key killed midway
        shutil.rmtree(stale, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=f".{key[:8]}-", dir=cache_dir) as temp:
        work = Path(temp)
        (work / "stage").mkdir()
        stage_guest_files(work / "stage", files)
        run_mmdebstrap(mmdebstrap_argv(suite, packages, work / "stage", work / "rootfs.tar"),
                       progress)
        (work / "out").mkdir()
        pack(work / "rootfs.tar", work / "out", suite, key, packages)
        if entry.exists():
            shutil.rmtree(entry)
        (work / "out").rename(entry)
    built = cached(entry)
    assert built is not None
    return built


def export(built: BuiltImage, out_dir: Path) -> BuiltImage:
    """The cached files in ``out_dir``: hard links where it can, copies elsewhere."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for path in (built.manifest_path, built.file_path):
        target = out_dir / path.name
        if target.resolve() != path.resolve():
            target.unlink(missing_ok=True)
            try:
                os.link(path, target)
            except OSError:
                shutil.copyfile(path, target)
        paths.append(target)
    return BuiltImage(built.manifest, paths[0], paths[1])


def build_inputs(suite: str, include: list[str] | None
                 ) -> tuple[list[str], list[tuple[str, bytes, int]], str]:
    """(packages, guest files, cache key) of a build, its inputs checked."""
    extra = list(include or [])
    check_inputs(suite, extra)
    packages = package_list(extra)
    files = guest_files()
    return packages, files, cache_key(suite, packages, files)


def is_cached(cache_dir: Path, suite: str = DEFAULT_SUITE,
              include: list[str] | None = None) -> bool:
    return cached(cache_dir / build_inputs(suite, include)[2]) is not None


def build_debian_image(cache_dir: Path, suite: str = DEFAULT_SUITE,
                       include: list[str] | None = None, out_dir: Path | None = None,
                       use_cache: bool = True,
                       progress: Callable[[str], None] | None = None
                       ) -> tuple[BuiltImage, bool]:
    """(the image, whether it came from the cache); in ``out_dir`` too when given.
    ``use_cache`` False builds again and replaces the cached build."""
    packages, files, key = build_inputs(suite, include)
    with cache_lock(cache_dir, key):
        built = cached(cache_dir / key) if use_cache else None
        reused = built is not None
        if built is None:
            built = build_into_cache(cache_dir, suite, packages, key, files, progress)
    return (export(built, out_dir) if out_dir is not None else built), reused

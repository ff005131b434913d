"""Build a tiny real image from Debian's ``busybox-static``: a root filesystem holding
``/bin/busybox`` and a few applet links, packed as a reproducible tar.gz, and its manifest.

The same busybox binary always gives the same file (fixed times, owners and gzip header), so
the same sha256 and, under one name, the same image uuid: importing it twice is recognised
as one image.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import shutil
import struct
import subprocess
import tarfile
import uuid as uuidlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

DEFAULT_BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "sleep", "hostname", "cat", "echo", "dd", "ls", "rm", "sync", "mkdir", "touch",
           # what a tenant (and a test) looks at its network with
           "ip", "ping", "arping", "ifconfig", "route", "nc", "nslookup")
DIRECTORIES = ("bin", "dev", "etc", "proc", "sys", "tmp", "root", "var", "run")
#: images made here get uuids in their own namespace, from their name and file's sha256
NAMESPACE = uuidlib.UUID("6f1d3c1e-3b57-4a43-9a0c-1f1b2d8c5e10")
PT_INTERP = 3
CHUNK = 1 << 20


class BuildError(Exception):
    pass


@dataclass(frozen=True)
class BuiltImage:
    manifest: dict[str, Any]
    manifest_path: Path
    file_path: Path


def is_static_elf(path: Path) -> bool:
    """True for an ELF executable without a program interpreter (no dynamic loader needed,
    so it runs in a root filesystem that has no libc)."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:  # 64-bit only
        return False
    endian = "<" if data[5] == 1 else ">"
    phoff, = struct.unpack_from(endian + "Q", data, 0x20)
    phentsize, phnum = struct.unpack_from(endian + "HH", data, 0x36)
    for i in range(phnum):
        p_type, = struct.unpack_from(endian + "I", data, phoff + i * phentsize)
        if p_type == PT_INTERP:
            return False
    return True


def busybox_version(busybox: Path) -> str:
    out = subprocess.run([str(busybox)], capture_output=True, text=True, check=False,
                         timeout=10).stdout
    found = re.search(r"BusyBox v(\d+(?:\.\d+)+)", out)
    return found.group(1) if found else "1.0.0"


def image_uuid(name: str, sha256: str) -> str:
    """The uuid of an image made here: the same name and file always give the same one."""
    return str(uuidlib.uuid5(NAMESPACE, f"{name}:{sha256}"))


def gzip_reproducibly(src: BinaryIO, dst: BinaryIO, level: int = 9) -> None:
    """gzip ``src`` into ``dst`` with a fixed header (no file name, mtime 0): the same input
    always gives the same bytes."""
    with gzip.GzipFile(filename="", fileobj=dst, mode="wb", mtime=0, compresslevel=level) as gz:
        shutil.copyfileobj(src, gz, CHUNK)


def write_manifest(out_dir: Path, manifest: dict[str, Any]) -> Path:
    """``<name>-<version>.json`` in ``out_dir``; the image file goes beside it, named as
    :func:`image_file_path` says."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{manifest['name']}-{manifest['version']}.json"
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def image_file_path(out_dir: Path, name: str, version: str) -> Path:
    return out_dir / f"{name}-{version}.tar.gz"


def _entry(name: str, kind: bytes, mode: int, size: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.linkname = kind, mode, size, link
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = 0
    return info


def rootfs_tar_gz(busybox: Path) -> bytes:
    binary = busybox.read_bytes()
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for directory in DIRECTORIES:
            mode = 0o1777 if directory == "tmp" else 0o755
            tar.addfile(_entry(f"./{directory}", tarfile.DIRTYPE, mode))
        tar.addfile(_entry("./bin/busybox", tarfile.REGTYPE, 0o755, len(binary)),
                    io.BytesIO(binary))
        for applet in APPLETS:
            tar.addfile(_entry(f"./bin/{applet}", tarfile.SYMTYPE, 0o777, link="busybox"))
        hostname = b"busybox\n"
        tar.addfile(_entry("./etc/hostname", tarfile.REGTYPE, 0o644, len(hostname)),
                    io.BytesIO(hostname))
    raw.seek(0)
    out = io.BytesIO()
    gzip_reproducibly(raw, out)
    return out.getvalue()


def manifest_for(data: bytes, version: str, name: str = "busybox") -> dict[str, Any]:
    sha256 = hashlib.sha256(data).hexdigest()
    return {
        "uuid": image_uuid(name, sha256),
        "name": name,
        "version": version,
        "os": "linux",
        "type": "lx-dataset",
        "description": "BusyBox from Debian's busybox-static: /bin/busybox and "
                       + ", ".join(APPLETS),
        "size_mb": 16,
        "requirements": {},
        "files": [{"sha256": sha256, "size": len(data), "compression": "gzip",
                   "format": "tar"}],
    }


def build_busybox_image(out_dir: Path, busybox: Path = DEFAULT_BUSYBOX,
                        name: str = "busybox") -> BuiltImage:
    if not busybox.is_file():
        raise BuildError(f"{busybox} not found: install busybox-static (apt-get install "
                         "busybox-static)")
    if not is_static_elf(busybox):
        raise BuildError(f"{busybox} is not a static 64-bit executable: install "
                         "busybox-static, not busybox")
    data = rootfs_tar_gz(busybox)
    manifest = manifest_for(data, busybox_version(busybox), name)
    manifest_path = write_manifest(out_dir, manifest)
    file_path = image_file_path(out_dir, name, manifest["version"])
    file_path.write_bytes(data)
    return BuiltImage(manifest, manifest_path, file_path)

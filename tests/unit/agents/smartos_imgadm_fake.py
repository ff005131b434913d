"""``imgadm`` of the fake SmartOS global zone (smartos_host.py): installed images in memory,
and imgadm's refusals with its error codes and exit statuses.

The facts come from smartos-live ``src/img/lib`` (errors.js at c35e02f, imgadm.js at e3d2707,
cli.js's error printing) and node-imgmanifest ``lib/imgmanifest.js`` at 04eb579:

- a failure prints ``imgadm SUBCOMMAND: error (CODE): MESSAGE`` on stderr and exits with the
  error's ``exitStatus``, 1 when it has none;
- ``ImageNotInstalled`` (``imgadm get`` of an image not on the zpool) exits 3, the only
  status other than 1 an image command meets (``OriginNotInstalled`` is 3 too);
- ``imgadm install -m -f`` checks the manifest (``ManifestValidation``: name of
  ``[A-Za-z0-9._/ -]``, at most 512 characters; version of ``[A-Za-z0-9._/-]``, at most
  128), uncompresses the file by ``files[0].compression`` (``UncompressionError``) and pipes
  it into ``zfs receive``; a file that is not a send stream makes zfs receive fail ("invalid
  stream (bad magic number)", echoed by imgadm) and imgadm says ``InternalError`` "zfs receive
  error while importing"; then the file's sha1 is compared with ``files[0].sha1``
  (``DownloadError``).

Docker images are layer tarballs imgadm unpacks itself, not streams: their files are not
checked for the stream's magic.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import lzma
import re
from pathlib import Path
from typing import Any

from tests.support.zfs_stream import is_zfs_stream

NAME_RE = re.compile(r"^[A-Za-z0-9._/ -]+$")
VERSION_RE = re.compile(r"^[A-Za-z0-9._/-]+$")
MAX_NAME, MAX_VERSION = 512, 128
UNCOMPRESS = {"gzip": gzip.decompress, "bzip2": bz2.decompress, "xz": lzma.decompress,
              "none": lambda data: data}


class ImgadmExit(LookupError):
    """imgadm's failure: its stderr and exit status (the fake zone answers with both)."""

    def __init__(self, subcommand: str, code: str, message: str, returncode: int = 1,
                 said_before: str = "") -> None:
        super().__init__(f"{said_before}imgadm {subcommand}: error ({code}): {message}")
        self.returncode = returncode


def imgadm(images: dict[str, dict[str, Any]], args: list[str]) -> str:
    if args[0] == "get":
        if args[1] not in images:
            raise ImgadmExit("get", "ImageNotInstalled",
                             f'image "{args[1]}" was not found on zpool "zones"', 3)
        return json.dumps({"manifest": images[args[1]], "zpool": "zones"})
    if args[:2] == ["list", "-j"]:
        return json.dumps([{"manifest": m, "zpool": "zones"} for m in images.values()])
    if args[0] == "install":
        manifest = json.loads(Path(args[args.index("-m") + 1]).read_text())
        data = Path(args[args.index("-f") + 1]).read_bytes()
        install(manifest, data)
        images[manifest["uuid"]] = manifest
        return f"Installed image {manifest['uuid']}\n"
    raise ImgadmExit(args[0], "UnknownCommand", f'unknown command: "{args[0]}"')


def install(manifest: dict[str, Any], data: bytes) -> None:
    """What imgadm install checks, in its order; raises ImgadmExit on the first failure."""
    problems = manifest_problems(manifest)
    if problems:
        raise ImgadmExit("install", "ManifestValidation",
                         "invalid manifest: " + ", ".join(problems))
    if manifest.get("state", "active") != "active":
        raise ImgadmExit("install", "ImageNotActive", f'image "{manifest["uuid"]}" is not '
                                                      "active")
    file = manifest["files"][0]
    try:
        stream = UNCOMPRESS[file["compression"]](data)
    except (OSError, EOFError, lzma.LZMAError) as exc:
        raise ImgadmExit("install", "UncompressionError",
                         f"{file['compression']} uncompression error while importing: "
                         "exit code 1") from exc
    if manifest.get("type") != "docker" and not is_zfs_stream(stream):
        raise ImgadmExit("install", "InternalError",
                         "zfs receive error while importing: exit code 1",
                         said_before="Stderr from zfs receive: cannot receive: invalid "
                                     "stream (bad magic number)\n")
    sha1 = hashlib.sha1(data).hexdigest()
    if sha1 != file["sha1"] or len(data) != file["size"]:
        raise ImgadmExit("install", "DownloadError",
                         f"image file sha1 expected to be {file['sha1']}, but was {sha1}")


def manifest_problems(manifest: dict[str, Any]) -> list[str]:
    """imgmanifest's minimal validation of the fields imgadm install needs."""
    problems = [f"{key} (MissingParameter)" for key in ("v", "uuid", "name", "version", "type",
                                                      "os") if key not in manifest]
    name, version = manifest.get("name"), manifest.get("version")
    if isinstance(name, str) and (len(name) > MAX_NAME or not NAME_RE.match(name)):
        problems.append("name (not a valid image name)")
    if isinstance(version, str) and (len(version) > MAX_VERSION
                                     or not VERSION_RE.match(version)):
        problems.append("version (not a valid image version)")
    return problems

"""SmartOS ``imgadm``: images installed in the zpool.

imgadm says why it failed on stderr as ``imgadm SUBCOMMAND: error (CODE): MESSAGE`` and exits
with the error's status (smartos-live ``src/img/lib/errors.js`` at c35e02f; cli.js prints
them): 3 for ``ImageNotInstalled`` and ``OriginNotInstalled``, 1 for every other. Its codes
become the agent's own, clear :class:`BackendError` codes (:data:`INSTALL_ERRORS`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from agents.backends.base import BackendError
from agents.backends.host.cmd import HostCommandError, run

IMGADM = "imgadm"
#: errors.js: ImageNotInstalledError's exitStatus
NOT_INSTALLED_EXIT = 3
_SAID = re.compile(r"^imgadm(?: [\w-]+)?: error \((\w+)\): (.*)$", re.MULTILINE)

#: imgadm's code at ``install`` -> (the agent's code, what it means for the image)
INSTALL_ERRORS: dict[str, tuple[str, str]] = {
    # imgadm.js: "zfs receive error while importing": not a send stream (a tarball, say)
    "InternalError:zfs receive": ("ImageFormatInvalid", "imgadm could not receive the file "
                                                        "as a ZFS send stream"),
    "DownloadError": ("ImageChecksumMismatch", "imgadm found the file's sha1 wrong"),
    "UncompressionError": ("ImageFileCorrupt", "imgadm could not uncompress the file"),
    "ManifestValidation": ("ImageManifestInvalid", "imgadm refused the manifest"),
    "InvalidManifest": ("ImageManifestInvalid", "imgadm refused the manifest"),
    "ImageNotActive": ("ImageManifestInvalid", "imgadm installs only active images"),
    "OriginNotInstalled": ("ImageOriginNotInstalled", "its origin image is not installed"),
}


class ImgadmError(BackendError):
    """imgadm failed; ``imgadm_code`` is its own code (errors.js), ``code`` the agent's."""

    def __init__(self, code: str, message: str, imgadm_code: str, returncode: int) -> None:
        super().__init__(code, message)
        self.imgadm_code = imgadm_code
        self.returncode = returncode


def said(stderr: str) -> tuple[str, str] | None:
    """(code, message) of imgadm's error line in ``stderr``; None when it has none."""
    found = _SAID.search(stderr)
    return (found.group(1), found.group(2).strip()) if found else None


def get(uuid: str) -> dict[str, Any] | None:
    """``imgadm get UUID``: the installed image's manifest info; None when not installed."""
    try:
        out = run([IMGADM, "get", uuid])
    except HostCommandError as exc:
        error = said(exc.stderr)
        if (error is not None and error[0] == "ImageNotInstalled") or \
                exc.returncode == NOT_INSTALLED_EXIT:
            return None
        raise
    info: dict[str, Any] = json.loads(out)
    return info


def list_images() -> list[dict[str, Any]]:
    """``imgadm list -j``: [{manifest: {...}, zpool, source?}]."""
    parsed: list[dict[str, Any]] = json.loads(run([IMGADM, "list", "-j"]) or "[]")
    return parsed


def install(manifest: Path, file: Path) -> None:
    """``imgadm install -m MANIFEST -f FILE``: a local image file and its IMGAPI manifest,
    without contacting any source (the head node is not an IMGAPI ``imgadm import`` could
    use). imgadm keeps the manifest as given, tags and requirements included. A refusal is an
    :class:`ImgadmError` whose code says what was wrong with the image."""
    try:
        run([IMGADM, "install", "-m", str(manifest), "-f", str(file)], timeout=3600)
    except HostCommandError as exc:
        raise install_error(exc) from exc


def install_error(exc: HostCommandError) -> BackendError:
    error = said(exc.stderr)
    if error is None:
        return exc
    imgadm_code, message = error
    key = f"{imgadm_code}:zfs receive" if "zfs receive" in message else imgadm_code
    code, meaning = INSTALL_ERRORS.get(key, ("ImageInstallFailed", "imgadm failed"))
    return ImgadmError(code, f"{meaning}: {message} (imgadm {imgadm_code}, exit "
                             f"{exc.returncode})", imgadm_code, exc.returncode)

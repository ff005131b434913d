"""What an image manifest must satisfy for ``imgadm`` to take it, and the format of an image's
file.

Names and versions follow node-imgmanifest's validation (TritonDataCenter/node-imgmanifest
``lib/imgmanifest.js`` at 04eb579, the rules ``imgadm install`` applies): a name of letters,
digits, space, ``.``, ``_``, ``/`` and ``-`` (imgmanifest allows 512 characters; ours 128), a
version of the same without the space (imgmanifest 128; ours 64).

An image's file is one of two formats, named in its file entry (``files[0].format``):

- ``tar``: a root filesystem tarball. What ``sdc image build-busybox``/``build-debian`` make
  and a Linux node's ``image create-from-machine`` uploads; Linux nodes unpack it.
- ``zfs``: a ``zfs send`` stream. What ``imgadm install`` pipes into ``zfs receive`` for
  every image type but docker, and what a SmartOS node's ``image create-from-machine`` makes.

A file entry without ``format`` (every image recorded before formats were) is a tarball,
except a zvol's, which can only be a ZFS stream.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

NAME_RE = re.compile(r"^[A-Za-z0-9._/ -]+$")
VERSION_RE = re.compile(r"^[A-Za-z0-9._/-]+$")
NAME_MAX = 128
VERSION_MAX = 64
NAME_RULE = 'letters, digits, " ", ".", "_", "/" and "-" only'
VERSION_RULE = 'letters, digits, ".", "_", "/" and "-" only'

TAR = "tar"
ZFS = "zfs"
FILE_FORMATS = (TAR, ZFS)


def name_problem(name: Any) -> str | None:
    """Why ``name`` is not an image name imgadm takes; None when it is."""
    return _problem(name, NAME_RE, NAME_MAX, NAME_RULE)


def version_problem(version: Any) -> str | None:
    """Why ``version`` is not an image version imgadm takes; None when it is."""
    return _problem(version, VERSION_RE, VERSION_MAX, VERSION_RULE)


def _problem(value: Any, pattern: re.Pattern[str], longest: int, rule: str) -> str | None:
    if not isinstance(value, str) or not 1 <= len(value) <= longest:
        return f"must be 1-{longest} characters"
    if not pattern.match(value):
        return f"must be {rule} (imgadm's manifest rule)"
    return None


def file_format(image_type: str, files: Sequence[Mapping[str, Any]] | None) -> str:
    """The format of an image's file: its entry's ``format``, else what images recorded
    before formats were have (see the module's docstring)."""
    first = files[0] if files else {}
    given = first.get("format")
    if given:
        return str(given)
    return ZFS if image_type == "zvol" else TAR

"""What makes a file a wheel of the agent (distribution ``sdc``): its name, and the name and
version its own metadata gives, which must agree."""

from __future__ import annotations

import io
import re
import zipfile
from email.parser import HeaderParser

from headnode.nodesetup.errors import NodeSetupError

#: a version as a wheel's file name carries it (PEP 440 public part, optional local label)
VERSION = r"[0-9][0-9A-Za-z.!]*(\+[0-9A-Za-z.]+)?"
#: ours is pure Python: one wheel for every node
FILENAME = re.compile(rf"^sdc-(?P<version>{VERSION})-py3-none-any\.whl$")
MAX_BYTES = 64 * 1024 * 1024


def version_of(filename: str) -> str | None:
    match = FILENAME.match(filename)
    return match.group("version") if match else None


def checked_version(filename: str, data: bytes) -> str:
    """The version of the sdc wheel ``data`` named ``filename``; BadWheel saying why not."""
    version = version_of(filename)
    if version is None:
        raise NodeSetupError("BadWheel", f"{filename!r} is not the name of an sdc wheel "
                             "(sdc-VERSION-py3-none-any.whl)")
    if len(data) > MAX_BYTES:
        raise NodeSetupError("BadWheel", f"{filename}: larger than {MAX_BYTES} bytes")
    metadata = _metadata(filename, data, f"sdc-{version}.dist-info/METADATA")
    name, stated = metadata.get("Name", ""), metadata.get("Version", "")
    if name.lower() != "sdc" or stated != version:
        raise NodeSetupError("BadWheel", f"{filename}: its metadata says {name} {stated}, "
                             f"its name sdc {version}")
    return version


def _metadata(filename: str, data: bytes, member: str) -> dict[str, str]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            text = archive.read(member).decode("utf-8")
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError) as exc:
        raise NodeSetupError("BadWheel", f"{filename}: not a wheel with {member}") from exc
    return dict(HeaderParser().parsestr(text).items())

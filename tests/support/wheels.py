"""Another version of the agent for upgrade tests: the same wheel under a new version (its
dist-info renamed, METADATA and RECORD rewritten), as a rebuild with a bumped version gives."""

from __future__ import annotations

import base64
import hashlib
import re
import zipfile
from pathlib import Path


def with_version(wheel: Path, version: str, out_dir: Path) -> Path:
    """A copy of the sdc ``wheel`` whose version is ``version``, in ``out_dir``."""
    old = re.match(r"^sdc-([^-]+)-", wheel.name).group(1)  # type: ignore[union-attr]
    old_info, new_info = f"sdc-{old}.dist-info/", f"sdc-{version}.dist-info/"
    target = out_dir / wheel.name.replace(f"sdc-{old}-", f"sdc-{version}-")
    out_dir.mkdir(parents=True, exist_ok=True)
    records = []
    with zipfile.ZipFile(wheel) as source, \
            zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as dest:
        for item in source.infolist():
            name = item.filename.replace(old_info, new_info, 1)
            if name == f"{new_info}RECORD":
                continue
            data = source.read(item)
            if name == f"{new_info}METADATA":
                data = re.sub(rb"(?m)^Version: .*$", f"Version: {version}".encode(), data,
                              count=1)
            dest.writestr(name, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            records.append(f"{name},sha256={digest.decode()},{len(data)}")
        records.append(f"{new_info}RECORD,,")
        dest.writestr(f"{new_info}RECORD", "\n".join(records) + "\n")
    return target

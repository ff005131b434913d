"""A tiny ZFS send stream for tests that install an image on a (fake) SmartOS node, and the
check ``zfs receive`` makes first.

A send stream is a sequence of ``dmu_replay_record`` structs (OpenZFS
``include/sys/zfs_ioctl.h``, read at openzfs/zfs 844f45a): 312 bytes each, in the sender's
byte order. The first is DRR_BEGIN: ``drr_type`` (uint32, 0), ``drr_payloadlen`` (uint32),
then ``drr_begin``: ``drr_magic`` (uint64, DMU_BACKUP_MAGIC 0x2F5bacbac), ``drr_versioninfo``
(uint64; its low two bits the header type, DMU_SUBSTREAM 1), ``drr_creation_time`` (uint64),
``drr_type`` (the objset type, uint32; DMU_OST_ZFS 2), ``drr_flags`` (uint32), ``drr_toguid``,
``drr_fromguid`` (uint64, 0 for a full stream) and ``drr_toname`` (256 bytes). The stream ends
with DRR_END (type 5). ``zfs receive`` refuses a stream whose first record lacks the magic in
either byte order ("invalid stream (bad magic number)").

What this writes only looks like a stream (no objects, no checksums): enough for the fake's
check, not for a real ``zfs receive``.
"""

from __future__ import annotations

import struct
import time

DMU_BACKUP_MAGIC = 0x2F5BACBAC
DRR_BEGIN, DRR_END = 0, 5
DMU_SUBSTREAM = 1
DMU_OST_ZFS = 2
RECORD_BYTES = 312
MAXNAMELEN = 256
_HEAD = struct.Struct("<IIQQQIIQQ")


def zfs_stream(toname: str = "zones/image@final", guid: int = 0x5EED) -> bytes:
    """A full send stream of ``toname`` with nothing in it: DRR_BEGIN, then DRR_END."""
    begin = _HEAD.pack(DRR_BEGIN, 0, DMU_BACKUP_MAGIC, DMU_SUBSTREAM, int(time.time()),
                       DMU_OST_ZFS, 0, guid, 0) + toname.encode().ljust(MAXNAMELEN, b"\0")
    end = struct.pack("<II", DRR_END, 0)
    return begin.ljust(RECORD_BYTES, b"\0") + end.ljust(RECORD_BYTES, b"\0")


def is_zfs_stream(data: bytes) -> bool:
    """Whether ``data`` starts with a DRR_BEGIN record carrying the magic (either order)."""
    if len(data) < 16:
        return False
    for order in "<>":
        record_type, = struct.unpack_from(order + "I", data, 0)
        magic, = struct.unpack_from(order + "Q", data, 8)
        if record_type == DRR_BEGIN and magic == DMU_BACKUP_MAGIC:
            return True
    return False

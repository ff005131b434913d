"""Our objects as CloudAPI shows them (its field names and vocabularies), in the API version
the request was answered with: 7.x differs where CloudAPI's docs say so (8.0.0 added a
machine's ``brand`` and ``docker`` and shows an image's own ``type``; 7.1.0 added a machine's
``networks`` and an image's ``files``, ``owner``, ``public``, ``state`` and ``tags``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from headnode.api.cloudapi.common import requested_version
from headnode.api.cloudapi.versions import version_tuple

#: our machine states -> CloudAPI's
STATES = {"destroyed": "deleted", "unknown": "offline"}
#: CloudAPI's state filter -> ours
STATE_FILTERS = {v: k for k, v in STATES.items()}
#: brands of hardware virtual machines (CloudAPI's deprecated type "virtualmachine")
HVM_BRANDS = ("kvm", "bhyve")
#: fields a version before the one named does not show
MACHINE_FIELDS_SINCE = {"brand": "8.0.0", "docker": "8.0.0", "networks": "7.1.0"}
IMAGE_FIELDS_SINCE = {name: "7.1.0" for name in ("files", "owner", "public", "state", "tags")}


def before(version: str | None, since: str) -> bool:
    return version_tuple(version or requested_version()) < version_tuple(since)


def for_version(shown: dict[str, Any], since: dict[str, str],
                version: str | None) -> dict[str, Any]:
    """``shown`` without the fields ``version`` (else the request's) does not have yet."""
    return {k: v for k, v in shown.items() if k not in since or not before(version, since[k])}


def machine_type(brand: str) -> str:
    return "virtualmachine" if brand in HVM_BRANDS else "smartmachine"


def field(obj: Any, name: str, default: Any = None) -> Any:
    """A field of a service's answer, whether it is a dict or a model object."""
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def iso(value: Any) -> str | None:
    """ISO-8601 UTC with milliseconds and ``Z``, as CloudAPI writes times."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    return str(value)


def machine(m: dict[str, Any], package_names: dict[str, str],
            version: str | None = None) -> dict[str, Any]:
    ips = list(m.get("ips") or [])
    networks = list(m.get("networks") or [])
    brand = m.get("brand") or "joyent"
    return for_version({
        "id": m["uuid"],
        "name": m["alias"],
        "type": machine_type(brand),
        "brand": brand,
        "state": STATES.get(m["state"], m["state"]),
        "image": m["image_uuid"],
        "ips": ips,
        "memory": m["ram_mb"],
        "disk": m["disk_mb"],
        "metadata": dict(m.get("metadata") or {}),
        "tags": dict(m.get("tags") or {}),
        "created": iso(m.get("created_at")),
        "updated": iso(m.get("updated_at")),
        "docker": False,
        "networks": [field(n, "uuid", n) if not isinstance(n, str) else n for n in networks],
        "primaryIp": m.get("primary_ip") or (ips[0] if ips else None),
        "firewall_enabled": bool(m.get("firewall_enabled", False)),
        "deletion_protection": False,
        "compute_node": m.get("server_uuid"),
        "package": package_names.get(m["package_uuid"], m["package_uuid"]),
        "dns_names": [],
    }, MACHINE_FIELDS_SINCE, version)


def image_type(image_type: str | None, version: str | None) -> str | None:
    """API 7 showed "virtualmachine" for a zvol image and "smartmachine" for any other."""
    if before(version, "8.0.0"):
        return "virtualmachine" if image_type == "zvol" else "smartmachine"
    return image_type


def image(i: Any, version: str | None = None) -> dict[str, Any]:
    return for_version({
        "id": field(i, "uuid"),
        "name": field(i, "name"),
        "version": field(i, "version"),
        "os": field(i, "os"),
        "type": image_type(field(i, "type"), version),
        "description": field(i, "description", ""),
        "requirements": dict(field(i, "requirements") or {}),
        "files": list(field(i, "files") or []),
        # IMGAPI's tags (default_user among them: node-triton's `triton ssh` reads it); the
        # image's init is ours, not IMGAPI's, and is shown by the operator API only
        "tags": dict(field(i, "tags") or {}),
        "owner": field(i, "owner_uuid") or "00000000-0000-0000-0000-000000000000",
        "public": bool(field(i, "public")),
        "state": field(i, "state"),
        "published_at": iso(field(i, "created_at")),
    }, IMAGE_FIELDS_SINCE, version)


def package(p: Any) -> dict[str, Any]:
    return {
        "id": field(p, "uuid"),
        "name": field(p, "name"),
        "memory": field(p, "memory"),
        "disk": field(p, "disk"),
        "swap": field(p, "swap"),
        "vcpus": field(p, "vcpus"),
        "lwps": field(p, "max_lwps"),
        "version": field(p, "version"),
        "group": field(p, "group") or "",
        "description": field(p, "description") or "",
        "default": bool(field(p, "default")),
    }


def key(k: Any) -> dict[str, Any]:
    return {
        "name": field(k, "name"),
        "fingerprint": field(k, "fingerprint") or field(k, "md5_fingerprint"),
        "key": field(k, "key") or field(k, "public_key"),
    }


def account(a: Any) -> dict[str, Any]:
    return {
        "id": field(a, "uuid"),
        "login": field(a, "login"),
        "email": field(a, "email"),
        "created": iso(field(a, "created_at")),
        "updated": iso(field(a, "updated_at")),
        "triton_cns_enabled": False,
    }


def snapshot(s: Any) -> dict[str, Any]:
    return {
        "name": field(s, "name"),
        "state": field(s, "state"),
        "created": iso(field(s, "created_at") or field(s, "created")),
        "updated": iso(field(s, "updated_at") or field(s, "updated")),
    }


#: our workflow names -> CloudAPI's audit action names (the triton CLI waits on these)
AUDIT_ACTIONS = {"snapshot_create": "create_snapshot", "snapshot_delete": "delete_snapshot",
                 "snapshot_rollback": "rollback_snapshot",
                 "snapshot_start": "rollback_snapshot"}


def audit(entry: dict[str, Any]) -> dict[str, Any]:
    return {**entry, "action": AUDIT_ACTIONS.get(entry["action"], entry["action"]),
            "time": iso(entry["time"])}

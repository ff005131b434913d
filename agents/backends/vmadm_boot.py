"""How a SmartOS zone boots, as pure functions: its brand from the installed image's manifest,
and the image's init (``ImageInitSchema``) as vmadm create properties.

- **Brand**: the manifest's ``requirements.brand`` when set (imgadm(8): images made from lx,
  kvm and bhyve VMs carry it), else by IMGAPI type: ``lx-dataset`` and ``docker`` -> ``lx``,
  ``zone-dataset`` -> the node's joyent brand (``joyent-minimal`` by default). The brand must
  take the image's type as its zone root (:data:`BRAND_IMAGE_TYPES`, vmadm's
  ``zoneroot_image_types``: VM.js refuses any other), so an ``other`` image, or an lx brand
  asked for a zone-dataset, is refused (``UnsupportedImage``) before vmadm runs. HVM brands
  (``zvol`` images, ``kvm``/``bhyve``) need a ``disks`` payload this backend does not build,
  and brands outside vmadm's table (checked against it: tests/unit/agents/
  test_vmadm_contract.py) are refused the same way.
- **lx**: ``kernel_version`` (the Linux version the brand emulates), which vmadm requires to
  create an lx zone, from the manifest's ``tags.kernel_version``, where IMGAPI lx images carry
  it (Triton's lx image builders require it). An lx or docker image without it is refused
  (``UnsupportedImage`` naming the tag) rather than guessed.
- **init None**: the brand's own init (SMF for joyent brands, the lx brand's default).
- **init kind "os"**: ignored on joyent brands (the zone boots SMF, which is the OS's init);
  on lx it is vmadm's ``init_name``, the path of the zone's init. ``init_name`` takes a path
  and nothing else, so an os init with arguments, env or a workdir other than "/" is refused
  (``InitNotSupported``) rather than booted without them. vmadm stops an lx zone with the
  zone's own ``/sbin/shutdown -h now`` (halting it after 60 s), not with the init's stop
  signal.
- **init kind "application"**: a docker zone, the only way vmadm runs a process with
  arguments as a zone's init (smartos-live ``src/dockerinit/README.md``): ``docker: true``,
  ``init_name`` the brand's dockerinit (:data:`DOCKERINIT`: lx and joyent-minimal only; vmadm
  takes ``docker`` for no other brand, so an application init in a ``joyent`` zone is
  ``InitNotSupported``), ``restart_init: false``, the ``docker`` internal metadata namespace, and in
  ``internal_metadata`` ``docker:id`` (64 hex digits, from the machine uuid),
  ``docker:entrypoint`` (the args, a JSON-encoded array), ``docker:env`` (JSON-encoded array of
  "K=V") and ``docker:workdir`` (a path). The zone halts when that process exits. vmadm stops a
  docker zone by sending its init SIGTERM and waiting (``vmadm stop -t``), so another stop
  signal is refused; ``stop_timeout`` is kept in internal_metadata
  (:data:`STOP_TIMEOUT_KEY`, outside every namespace, so the guest cannot read it) for the stop.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from agents.backends.base import BackendError

LX = "lx"
HVM_BRANDS = ("kvm", "bhyve")
#: the zone brands this backend creates -> the IMGAPI image types vmadm takes as their zone
#: root (proptable.js ``zoneroot_image_types``); joyent brands boot SMF
BRAND_IMAGE_TYPES = {"joyent": ("zone-dataset",), "joyent-minimal": ("zone-dataset",),
                     LX: ("lx-dataset", "docker")}
#: IMGAPI image type -> brand; zone-dataset takes the node's joyent brand
TYPE_BRANDS = {"lx-dataset": LX, "docker": LX}
#: the brands with a dockerinit (proptable.js brand feature), the only ones vmadm lets be
#: docker zones
DOCKERINIT = {LX: "/native/usr/vm/sbin/dockerinit",
              "joyent-minimal": "/usr/vm/sbin/dockerinit"}
DOCKER_NAMESPACE = "docker"
#: the only signal vmadm(8) sends a docker zone's init at stop
DOCKER_STOP_SIGNAL = "SIGTERM"
STOP_TIMEOUT_KEY = "sdc-agent:stop_timeout"


def zone_brand(manifest: dict[str, Any], joyent_brand: str) -> str:
    """The vmadm brand for a zone of the image whose IMGAPI ``manifest`` is installed."""
    required = (manifest.get("requirements") or {}).get("brand")
    kind = manifest.get("type") or "zone-dataset"
    brand = str(required or TYPE_BRANDS.get(kind, joyent_brand))
    if brand in HVM_BRANDS or kind == "zvol":
        raise BackendError("UnsupportedImage",
                           f"image {manifest.get('uuid')} ({kind}, brand {brand}) needs a "
                           "hardware VM (a disks payload), which this backend does not create")
    if brand not in BRAND_IMAGE_TYPES:
        raise BackendError("UnsupportedImage",
                           f"image {manifest.get('uuid')} requires brand {brand!r}, which "
                           "this backend does not create")
    if kind not in BRAND_IMAGE_TYPES[brand]:
        raise BackendError("UnsupportedImage",
                           f"image {manifest.get('uuid')} is type {kind}; vmadm's brand "
                           f"{brand} takes only {', '.join(BRAND_IMAGE_TYPES[brand])} as a "
                           "zone root")
    return brand


def boot_properties(brand: str, manifest: dict[str, Any], init: dict[str, Any] | None,
                    machine_uuid: str) -> dict[str, Any]:
    """The create payload's boot properties for ``brand``: kernel_version for lx, and the
    init's ``init_name`` (plus the docker zone's properties for an application init)."""
    props: dict[str, Any] = {}
    if brand == LX:
        props["kernel_version"] = _kernel_version(manifest)
    if init is None:
        return props
    if init["kind"] == "os":
        return {**props, **_os_init(brand, init)}
    return {**props, **_application_init(brand, init, machine_uuid)}


def _kernel_version(manifest: dict[str, Any]) -> str:
    kernel = (manifest.get("tags") or {}).get("kernel_version")
    if not kernel or not isinstance(kernel, str):
        raise BackendError("UnsupportedImage",
                           f"image {manifest.get('uuid')} ({manifest.get('type')}) has no "
                           "tags.kernel_version, which vmadm requires to create an lx zone")
    return kernel


def _os_init(brand: str, init: dict[str, Any]) -> dict[str, Any]:
    if brand != LX:
        return {}  # a joyent zone's init is SMF: the OS image boots as SmartOS boots it
    extra = [what for what, given in (("arguments", len(init["args"]) > 1),
                                      ("env", bool(init.get("env"))),
                                      ("workdir", init.get("workdir", "/") != "/")) if given]
    if extra:
        raise BackendError("InitNotSupported",
                           f"vmadm's init_name is the path of the lx zone's init only; the "
                           f"image's os init {init['args']!r} also has {', '.join(extra)}, "
                           "which it cannot carry")
    if not init["args"][0].startswith("/"):
        raise BackendError("InitNotSupported",
                           f"vmadm's init_name is a path in the zone; {init['args'][0]!r} "
                           "is not absolute")
    return {"init_name": init["args"][0]}


def _application_init(brand: str, init: dict[str, Any], machine_uuid: str) -> dict[str, Any]:
    if brand not in DOCKERINIT:
        raise BackendError("InitNotSupported",
                           f"an application init runs as a docker zone, which vmadm's brand "
                           f"{brand} cannot be (only {', '.join(sorted(DOCKERINIT))})")
    signal = init.get("stop_signal", DOCKER_STOP_SIGNAL)
    if signal != DOCKER_STOP_SIGNAL:
        raise BackendError("InitNotSupported",
                           f"vmadm stops a docker zone's init with {DOCKER_STOP_SIGNAL} only; "
                           f"the image asks for {signal}")
    return {
        "docker": True,
        "init_name": DOCKERINIT[brand],
        "restart_init": False,
        "internal_metadata_namespaces": [DOCKER_NAMESPACE],
        "internal_metadata": {
            "docker:id": hashlib.sha256(machine_uuid.encode()).hexdigest(),
            "docker:entrypoint": json.dumps(list(init["args"])),
            "docker:env": json.dumps(list(init.get("env") or [])),
            "docker:workdir": init.get("workdir") or "/",
            STOP_TIMEOUT_KEY: str(init.get("stop_timeout", 30)),
        },
    }


def stop_timeout(vm: dict[str, Any]) -> int | None:
    """The seconds ``vmadm stop -t`` gives a docker zone (``vmadm get`` object), None for any
    other zone (vmadm refuses -t for them)."""
    if not vm.get("docker"):
        return None
    kept = (vm.get("internal_metadata") or {}).get(STOP_TIMEOUT_KEY)
    return int(kept) if kept and str(kept).isdigit() else None

"""What "fits" means, written once: what a server has, what it uses, what a machine needs.

Each rule is one expression over accessors, never over a concrete type:

- ``s``, the server: ``status``, ``setup``, ``reserved``, ``maintenance``, its size
  (``ram_mb``, ``cpus``, ``disk_mb``), what it holds (``ram_used_mb``, ``disk_used_mb``,
  ``cpu_used``, all in flight + committed; ``images_mb``) and its counts
  (``machine_count``, ``capped_count``, ``uncapped_count``);
- ``k``, the policy: ``Policy``'s field names (ratios and the machine limit);
- the machine's needs as plain arguments, ``image_mb`` being what *this* server must still
  import (0 when it holds the image already);
- ``logic``, where a rule needs "and" or "not".

The same expressions are evaluated two ways, so the two cannot disagree (Nomad's
``AllocsFit`` serves both ranking and plan apply in the same way):

- with Python numbers (``ServerState``, ``Policy``, :data:`PYTHON`): the placement filters,
  the scorers, ``room_for`` (capacity reports) and the what-if simulation;
- with SQLAlchemy columns (services/fleet.py ``fit_columns``) and bound parameters
  (services/capacity.py): the WHERE clause of the guarded UPDATE that reserves room on the
  locked row, and of a resize's growth.

The one input the guard does not read from the row is whether the server holds the image:
there, the claim on ``server_images`` decides (see :func:`image_to_import`).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable
from typing import Any, Protocol

#: the policy's fields the rules read (the guard binds one parameter per name)
POLICY_KNOBS = ("reservation_ratio", "pool_usable_ratio", "ram_overprovision",
                "disk_overprovision", "cpu_overprovision", "max_machines")


class Logic(Protocol):
    def all(self, *conditions: Any) -> Any: ...

    def not_(self, condition: Any) -> Any: ...


class _PythonLogic:
    @staticmethod
    def all(*conditions: Any) -> bool:
        return all(conditions)

    not_ = staticmethod(operator.not_)  # in C: the filters call it once per server


PYTHON: Logic = _PythonLogic()


# -- whether a server takes machines at all -------------------------------------------------

def is_running(s: Any) -> Any:
    return s.status == "running"


def is_set_up(s: Any) -> Any:
    return s.setup


def is_unreserved(s: Any, logic: Logic) -> Any:
    return logic.not_(s.reserved)


def is_in_service(s: Any, logic: Logic) -> Any:
    """Not in maintenance: a server in maintenance keeps its machines but takes no new one."""
    return logic.not_(s.maintenance)


def below_machine_limit(s: Any, k: Any) -> Any:
    return s.machine_count < k.max_machines


def keeps_capness(s: Any, capped: bool) -> Any:
    """Capped and uncapped machines never share a server (DAPI)."""
    return s.uncapped_count == 0 if capped else s.capped_count == 0


# -- room left, per resource: what the server has minus what it uses ------------------------

def unreserved_ram(s: Any, k: Any) -> Any:
    return s.ram_mb * (1 - k.reservation_ratio) - s.ram_used_mb / k.ram_overprovision


def unreserved_disk(s: Any, k: Any) -> Any:
    return s.disk_mb * k.pool_usable_ratio - s.images_mb - s.disk_used_mb / k.disk_overprovision


def cpu_total(s: Any, k: Any) -> Any:
    """Percent-of-a-CPU shares a server offers to capped machines, after overprovisioning."""
    return s.cpus * 100 * k.cpu_overprovision


def unreserved_cpu(s: Any, k: Any) -> Any:
    return cpu_total(s, k) - s.cpu_used


# -- what one machine needs, per resource ---------------------------------------------------

def ram_fits(s: Any, k: Any, ram_mb: Any) -> Any:
    return unreserved_ram(s, k) >= ram_mb


def disk_fits(s: Any, k: Any, disk_mb: Any, image_mb: Any) -> Any:
    """The machine's quota, and the image if the server must still import it."""
    return unreserved_disk(s, k) >= disk_mb + image_mb


def cpu_fits(s: Any, k: Any, cpu_cap: Any) -> Any:
    """Only asked of capped machines: an uncapped one claims no share."""
    return unreserved_cpu(s, k) >= cpu_cap


def image_to_import(held: Iterable[str], image_uuid: str, image_mb: int) -> int:
    """What a new image takes from this server's pool: its size, unless the server holds it
    (or there is no image). The guard learns the same from its claim on ``server_images``."""
    return image_mb if image_uuid and image_uuid not in held else 0


def fits(s: Any, k: Any, logic: Logic, capped: bool, ram_mb: Any, disk_mb: Any,
         cpu_cap: Any, image_mb: Any) -> Any:
    """Every rule at once (the guard's condition); the filters ask them one by one, so that a
    refusal names its reason."""
    rules = [is_running(s), is_set_up(s), is_unreserved(s, logic), is_in_service(s, logic),
             below_machine_limit(s, k), keeps_capness(s, capped), ram_fits(s, k, ram_mb)]
    if capped:
        rules.append(cpu_fits(s, k, cpu_cap))
    rules.append(disk_fits(s, k, disk_mb, image_mb))
    return logic.all(*rules)


# -- how many fit one after another (capacity reports) --------------------------------------

#: "no limit from this resource" (a zero-sized request)
UNBOUNDED = 1 << 30


def machines_that_fit(s: Any, k: Any, capped: bool, ram_mb: int, disk_mb: int, cpu_cap: int,
                      image_mb: int) -> int:
    """How many machines of one size the rules above let ``s`` take one after another: each
    takes its need from its resource's room (divided by the resource's overprovision ratio,
    as the room divides what is used), the first one also the image. The caller has checked
    the rules that do not depend on size."""
    limits = [k.max_machines - s.machine_count,
              _count(unreserved_ram(s, k), ram_mb, ram_mb / k.ram_overprovision),
              _count(unreserved_disk(s, k) - image_mb, disk_mb,
                     disk_mb / k.disk_overprovision)]
    if capped:
        limits.append(_count(unreserved_cpu(s, k), cpu_cap, cpu_cap))
    return max(0, min(limits))


def _count(room: float, need: int, step: float) -> int:
    """Machines that fit when each needs ``need`` free and then takes ``step`` of it."""
    if room < need:
        return 0
    if step <= 0:
        return UNBOUNDED
    return 1 + math.floor((room - need) / step)

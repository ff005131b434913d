"""``/ops/machines/<uuid>/nics``: a machine's NICs for the operator, who alone may change
their anti-spoofing settings (vmadm's ``allow_*`` flags and ``allowed_ips``). Adding,
removing and updating are jobs: the answer is 202 with the job and the NIC as it stands."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from headnode.api.ops import operator_caller, service_context
from headnode.services import nics
from headnode.services.errors import InvalidArgument
from schemas.networks import Nic, NicCreate, NicJob, NicUpdate, canonical_mac

blp = Blueprint("nics", __name__, url_prefix="/ops/machines",
                description="A machine's NICs: add, remove, anti-spoofing settings")


def _mac(raw: str) -> str:
    mac = canonical_mac(raw)
    if mac is None:
        raise InvalidArgument("mac", f"{raw!r} is not a MAC address (e.g. 90:b8:d0:2f:b8:f9)")
    return mac


def _shown(machine_uuid: str, mac: str) -> dict[str, Any]:
    with service_context().read() as session:
        return nics.nic_to_ops(nics.get_nic(session, machine_uuid, mac))


@blp.route("/<uuid>/nics")
class MachineNics(MethodView):
    @blp.response(200, Nic(many=True))
    def get(self, uuid: str) -> Any:
        """The machine's NICs, net0 first."""
        with service_context().read() as session:
            return [nics.nic_to_ops(n) for n in nics.list_nics(session, uuid)]

    @blp.arguments(NicCreate)
    @blp.response(202, NicJob)
    def post(self, body: dict[str, Any], uuid: str) -> Any:
        """Add a NIC (``add_nic`` job); it is ``provisioning`` until the node has it."""
        nic, job = nics.add_nic(service_context(), uuid, body["network"], body.get("ip"),
                                caller=operator_caller())
        return {"machine_uuid": uuid, "job_uuid": job.uuid, "nic": nics.nic_to_ops(nic)}


@blp.route("/<uuid>/nics/<mac>")
class MachineNic(MethodView):
    """``mac`` with or without colons."""

    @blp.response(200, Nic)
    def get(self, uuid: str, mac: str) -> Any:
        return _shown(uuid, _mac(mac))

    def _update(self, body: dict[str, Any], uuid: str, mac: str) -> dict[str, Any]:
        mac = _mac(mac)
        job = nics.update_nic(service_context(), uuid, mac, body, caller=operator_caller())
        return {"machine_uuid": uuid, "job_uuid": job.uuid, "nic": _shown(uuid, mac)}

    @blp.arguments(NicUpdate)
    @blp.response(202, NicJob)
    def put(self, body: dict[str, Any], uuid: str, mac: str) -> Any:
        """Change the anti-spoofing settings given (``update_nic`` job); others stay."""
        return self._update(body, uuid, mac)

    @blp.arguments(NicUpdate)
    @blp.response(202, NicJob)
    def patch(self, body: dict[str, Any], uuid: str, mac: str) -> Any:
        """As PUT."""
        return self._update(body, uuid, mac)

    @blp.response(202, NicJob)
    def delete(self, uuid: str, mac: str) -> Any:
        """Unplug and delete the NIC (``remove_nic`` job); the primary NIC only when it is
        the machine's last (409 ``PrimaryNic``)."""
        mac = _mac(mac)
        job = nics.remove_nic(service_context(), uuid, mac, caller=operator_caller())
        return {"machine_uuid": uuid, "job_uuid": job.uuid, "nic": _shown(uuid, mac)}

"""A machine's NICs: ListNics, GetNic, AddNic, RemoveNic (``/machines/:id/nics[/:mac]``).

``:mac`` comes without colons (CloudAPI's form, what ``triton`` sends) or with them. AddNic
answers 201 with the NIC ``provisioning`` and its ``Location``; the ``add_nic`` job plugs it
and GetNic then shows it ``running`` (or ``stopped``), which ``triton inst nic create -w``
polls for. A machine that already has a NIC on the network gets 302 to that NIC instead, as
CloudAPI answers. RemoveNic answers 204; the NIC is ``removing`` until its job has unplugged
it, then 404. The anti-spoofing settings are the operator's (``/ops/.../nics/<mac>``).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from headnode.api.cloudapi.common import body_or_query, ctx, job_caller, tenant
from headnode.services import networks, nics
from headnode.services.errors import NotFound
from schemas.cloudapi import CloudApiInputError, NicCreate, load
from schemas.networks import canonical_mac

blp = Blueprint("cloudapi_nics", __name__)


def _mac(raw: str) -> str:
    mac = canonical_mac(raw)
    if mac is None:
        raise CloudApiInputError("InvalidArgument", "mac", f"mac {raw!r} is not a MAC address "
                                 "(e.g. 90b8d02fb8f9 or 90:b8:d0:2f:b8:f9)")
    return mac


def _answer(body: Any) -> Response:
    response = jsonify(body)
    if request.method == "HEAD":
        response.set_data(b"")
    return response


def _location(mac: str) -> str:
    """Where GetNic finds the NIC (the request is a POST to ``/:login/machines/:id/nics``)."""
    return f"{request.path.rstrip('/')}/{mac.replace(':', '')}"


@blp.route("/machines/<uuid>/nics", methods=["GET", "HEAD"])
def list_nics(uuid: str) -> Any:
    with ctx().read() as session:
        shown = [nics.nic_to_cloudapi(n) for n in nics.list_nics(session, uuid, tenant().uuid)]
    response = _answer(shown)
    response.headers["x-resource-count"] = str(len(shown))
    return response


@blp.route("/machines/<uuid>/nics/<mac>", methods=["GET", "HEAD"])
def get_nic(uuid: str, mac: str) -> Any:
    with ctx().read() as session:
        return _answer(nics.nic_to_cloudapi(nics.get_nic(session, uuid, _mac(mac),
                                                         tenant().uuid)))


def _nic_on(machine_uuid: str, network: str) -> dict[str, Any] | None:
    """The machine's NIC on ``network`` (id or name the tenant sees), if it has one."""
    try:
        network_uuid = networks.get_network(ctx(), network, tenant().uuid).uuid
    except NotFound:
        return None  # add_nic names the field
    with ctx().read() as session:
        for nic in nics.list_nics(session, machine_uuid, tenant().uuid):
            if nic.network_uuid == network_uuid:
                return nics.nic_to_cloudapi(nic)
    return None


@blp.post("/machines/<uuid>/nics")
def add_nic(uuid: str) -> Any:
    body = load(NicCreate(), body_or_query())
    existing = _nic_on(uuid, body["network"])
    if existing is not None:
        response = Response(status=302)
        response.headers["Location"] = _location(existing["mac"])
        return response
    nic, _job = nics.add_nic(ctx(), uuid, body["network"], body["ip"],
                             owner_uuid=tenant().uuid, caller=job_caller())
    shown = nics.nic_to_cloudapi(nic)
    response = jsonify(shown)
    response.headers["Location"] = _location(shown["mac"])
    return response, 201


@blp.delete("/machines/<uuid>/nics/<mac>")
def remove_nic(uuid: str, mac: str) -> Any:
    nics.remove_nic(ctx(), uuid, _mac(mac), owner_uuid=tenant().uuid, caller=job_caller())
    return Response(status=204)

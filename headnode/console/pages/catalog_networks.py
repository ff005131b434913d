"""Networks. Operators see every network, create one (name, subnet, gateway, provision
range, nic tag, VLAN, resolvers, MTU, an owner for a private one) and delete one no machine
uses; a tenant sees the networks they may put machines on (public ones and their own)."""

from __future__ import annotations

from typing import Any

from flask import render_template, request

from headnode.console import blueprint, nav_entry
from headnode.console.pages.catalog_common import (
    FormErrors,
    back_to,
    form_body,
    page_number,
    page_of,
    submitted,
)
from headnode.console.viewer import Viewer, operators_only, service_context, signed_in
from headnode.services import accounts, networks
from schemas.networks import NetworkCreate

nav_entry("networks", "Networks")


def _networks(viewer: Viewer, errors: FormErrors | None = None) -> str:
    ctx = service_context()
    rows = networks.list_networks(ctx, None if viewer.is_operator else viewer.account_uuid)
    owners = ({a.uuid: a.login for a in accounts.list_accounts(ctx)}
              if viewer.is_operator and any(n.owner_uuid for n in rows) else {})
    return render_template("console/networks.html", pager=page_of(rows, page_number()),
                           owners=owners, errors=errors,
                           form=request.form if errors else None)


@blueprint.get("/networks", endpoint="networks")
@signed_in
def networks_page(viewer: Viewer) -> Any:
    return _networks(viewer)


@blueprint.post("/networks")
@operators_only
def create_network(viewer: Viewer) -> Any:
    def act() -> str:
        created = networks.create_network(service_context(),
                                          form_body(NetworkCreate(), request.form))
        return f"Network {created.name} ({created.subnet}) created."
    return submitted(lambda errors: _networks(viewer, errors), act, back_to("console.networks"))


@blueprint.post("/networks/delete")
@operators_only
def delete_network(viewer: Viewer) -> Any:
    def act() -> str:
        network = networks.get_network(service_context(), request.form.get("network", ""))
        networks.delete_network(service_context(), network.uuid)
        return f"Network {network.name} deleted."
    return submitted(lambda errors: _networks(viewer, errors), act, back_to("console.networks"),
                     refused="Not deleted.")

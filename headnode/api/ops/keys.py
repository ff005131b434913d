"""``/ops/accounts/<login>/keys``: operators seed the SSH keys accounts sign CloudAPI
requests with; ``/ops/accounts/<login>/default-network``: where their machines' NIC goes
when a create names no network."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from headnode.api.ops import service_context
from headnode.services import accounts, keys, networks
from headnode.services.errors import NotFound
from schemas.networks import DefaultNetwork, Key, KeyCreate, Network

blp = Blueprint("account_keys", __name__, url_prefix="/ops/accounts",
                description="SSH keys of accounts")


@blp.route("/<ident>/keys")
class AccountKeys(MethodView):
    """``ident`` is the account's uuid or its login."""

    @blp.response(200, Key(many=True))
    def get(self, ident: str) -> Any:
        ctx = service_context()
        account = accounts.get_account(ctx, ident)
        return [keys.key_to_dict(k) for k in keys.list_keys(ctx, account.uuid)]

    @blp.arguments(KeyCreate)
    @blp.response(201, Key)
    def post(self, attrs: dict[str, Any], ident: str) -> Any:
        ctx = service_context()
        account = accounts.get_account(ctx, ident)
        return keys.key_to_dict(keys.create_key(ctx, account.uuid, attrs.get("name"),
                                                attrs["key"]))


@blp.route("/<ident>/keys/<key>")
class AccountKey(MethodView):
    @blp.response(200, Key)
    def get(self, ident: str, key: str) -> Any:
        ctx = service_context()
        account = accounts.get_account(ctx, ident)
        return keys.key_to_dict(keys.get_key(ctx, account.uuid, key))

    @blp.response(204)
    def delete(self, ident: str, key: str) -> None:
        ctx = service_context()
        keys.delete_key(ctx, accounts.get_account(ctx, ident).uuid, key)


@blp.route("/<ident>/default-network")
class AccountDefaultNetwork(MethodView):
    @blp.response(200, Network)
    def get(self, ident: str) -> Any:
        ctx = service_context()
        network = networks.get_default_network(ctx, accounts.get_account(ctx, ident).uuid)
        if network is None:
            raise NotFound("default network of account", ident)
        return networks.network_to_dict(network)

    @blp.arguments(DefaultNetwork)
    @blp.response(200, Network)
    def put(self, attrs: dict[str, Any], ident: str) -> Any:
        ctx = service_context()
        account = accounts.get_account(ctx, ident)
        network = networks.set_default_network(ctx, account.uuid, attrs["network"])
        if network is None:
            raise NotFound("default network of account", ident)
        return networks.network_to_dict(network)

"""``/ops/machines/<uuid>/migrate`` and ``/ops/migrations``: moving a machine to another
server in phases (docs/migration.md), and the migrations' records. Each phase is a job:
the answer is 202 with the migration and its ``job_uuid``; ``estimate`` answers 200."""

from __future__ import annotations

from typing import Any

from flask import jsonify
from flask.views import MethodView
from flask_smorest import Blueprint

from headnode.api.ops import operator_caller, service_context
from headnode.services import migrations
from schemas.ops_migrations import (
    MigrateRequest,
    Migration,
    MigrationEstimate,
    MigrationListQuery,
)

blp = Blueprint("migrations", __name__, url_prefix="/ops",
                description="Migrations: move a machine to another server (begin, sync, "
                            "switch, finalize, rollback, abort, automatic)")


@blp.route("/machines/<uuid>/migrate")
class MachineMigrate(MethodView):
    @blp.arguments(MigrateRequest)
    @blp.response(202, Migration)
    @blp.alt_response(200, schema=MigrationEstimate, description="action=estimate")
    def post(self, body: dict[str, Any], uuid: str) -> Any:
        """Start a phase of the machine's migration (``begin`` and ``automatic`` may name
        the ``target_server``; placement still checks the machine fits there), or estimate
        one (``estimate``: its size and time at the rate recent migrations had)."""
        ctx = service_context()
        if body["action"] == "estimate":
            return jsonify(migrations.estimate(ctx, uuid))
        return migrations.migrate(ctx, uuid, body["action"], caller=operator_caller(),
                                  target_server=body.get("target_server"))


@blp.route("/migrations")
class Migrations(MethodView):
    @blp.arguments(MigrationListQuery, location="query")
    @blp.response(200, Migration(many=True))
    def get(self, query: dict[str, Any]) -> Any:
        """Every migration, oldest first (``machine``: that machine's only)."""
        return [migrations.migration_to_ops(m) for m in
                migrations.list_migrations(service_context(),
                                           machine_uuid=query.get("machine"))]


@blp.route("/migrations/<uuid>")
class MachineMigration(MethodView):
    @blp.response(200, Migration)
    def get(self, uuid: str) -> Any:
        """The newest migration of the machine ``uuid``."""
        return migrations.migration_to_ops(migrations.get_migration(service_context(), uuid))

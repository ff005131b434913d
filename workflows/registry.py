"""Every workflow the head node runs, registered in one call.

A definition module registers its workflows with the engine as it defines them; this is
the one place that imports them all. Whatever starts or runs jobs calls :func:`load_all`
first: the API app (``headnode.api.app.create_app``) and the Celery app
(``workflows.celery_app``). Services start jobs by workflow name and never import the
definitions, so imports flow one way (the layers contract in pyproject.toml).
"""

from __future__ import annotations

from types import ModuleType


def load_all() -> tuple[ModuleType, ...]:
    """Register every workflow (again: harmless); the definition modules, in order."""
    # Imported when called, not when this module is: importing it registers nothing.
    from workflows import (
        machine_images,
        machines,
        migrations,
        nics,
        node_setup,
        nodes,
        snapshots,
    )

    return machines, snapshots, machine_images, nics, nodes, node_setup, migrations

"""The console's pages, one module per area; importing a module adds its routes."""

from __future__ import annotations

import importlib

#: every page module, in the order of the navigation
PAGE_MODULES = ("dashboard", "servers", "machines", "machine_actions", "machine_create", "jobs",
                "catalog", "catalog_networks", "catalog_accounts", "capacity")


def load_pages() -> None:
    for name in PAGE_MODULES:
        importlib.import_module(f"{__name__}.{name}")

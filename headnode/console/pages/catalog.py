"""Images and packages. Operators see every image (in every state) and every package,
create packages and delete one no machine was ever made of; a tenant sees the images they
may use (public ones and their own, active) and the active packages, read only, as CloudAPI
shows them.

Networks: ``catalog_networks``; accounts and keys: ``catalog_accounts``."""

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
from headnode.services import images, packages
from headnode.services import tenant as tenant_service
from schemas.ops import Package as PackageSchema

#: the package form's checkboxes (ticked: true, else false)
PACKAGE_CHECKBOXES = ("active", "default")

nav_entry("images", "Images")
nav_entry("packages", "Packages")


@blueprint.get("/images", endpoint="images")
@signed_in
def images_page(viewer: Viewer) -> Any:
    ctx = service_context()
    rows = (images.list_images(ctx) if viewer.is_operator
            else tenant_service.visible_images(ctx, viewer.account_uuid))
    return render_template("console/images.html", pager=page_of(rows, page_number()))



def _packages(viewer: Viewer, errors: FormErrors | None = None) -> str:
    ctx = service_context()
    rows = packages.list_packages(ctx, active=None if viewer.is_operator else True)
    return render_template("console/packages.html", pager=page_of(rows, page_number()),
                           errors=errors, form=request.form if errors else None)


@blueprint.get("/packages", endpoint="packages")
@signed_in
def packages_page(viewer: Viewer) -> Any:
    return _packages(viewer)


@blueprint.post("/packages")
@operators_only
def create_package(viewer: Viewer) -> Any:
    def act() -> str:
        attrs = form_body(PackageSchema(), request.form, PACKAGE_CHECKBOXES)
        return f"Package {packages.create_package(service_context(), attrs).name} created."
    return submitted(lambda errors: _packages(viewer, errors), act, back_to("console.packages"))


@blueprint.post("/packages/delete")
@operators_only
def delete_package(viewer: Viewer) -> Any:
    def act() -> str:
        package = packages.get_package(service_context(), request.form.get("package", ""))
        packages.delete_package(service_context(), package.uuid)
        return f"Package {package.name} deleted."
    return submitted(lambda errors: _packages(viewer, errors), act, back_to("console.packages"),
                     refused="Not deleted.")

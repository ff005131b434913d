"""Agent bundles on the head node: uploaded wheels checked (a wheel of sdc whose name and
metadata agree; one content per version), bundles made once with every dependency wheel."""

from __future__ import annotations

from pathlib import Path

import pytest

from headnode.config import HeadnodeSettings
from headnode.nodesetup import bundle, checkout
from headnode.nodesetup.errors import NodeSetupError
from tests.support.wheels import with_version


@pytest.fixture(scope="session")
def checkout_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return checkout.build_wheel(tmp_path_factory.mktemp("built"))


@pytest.fixture
def head(tmp_path: Path) -> HeadnodeSettings:
    return HeadnodeSettings(data_dir=tmp_path / "head")


def test_the_checkout_wheel_is_built_once_per_source(checkout_wheel: Path) -> None:
    version = checkout.project_version()
    digest = checkout.digest(checkout.source_files())[:12]
    assert checkout_wheel.name == f"sdc-{version}-py3-none-any.whl"
    assert checkout_wheel.parent.name == f"{version}-{digest}"
    # the same source gives the same file back
    assert checkout.build_wheel(checkout_wheel.parent.parent) == checkout_wheel


def test_a_stored_wheel_is_bundled_with_its_dependencies(
        head: HeadnodeSettings, checkout_wheel: Path, tmp_path: Path) -> None:
    wheel = with_version(checkout_wheel, "9.8.7", tmp_path)
    assert bundle.store_wheel(head, wheel.name, wheel.read_bytes()) == "9.8.7"
    assert bundle.store_wheel(head, wheel.name, wheel.read_bytes()) == "9.8.7"  # same again
    assert bundle.stored_versions(head) == ["9.8.7"]
    made = bundle.prepare(head, "9.8.7")
    assert made.wheels[0] == wheel.name and len(made.wheels) > 20
    assert any(name.startswith("celery-") for name in made.wheels)
    assert all((made.directory / name).is_file() for name in made.wheels)
    assert bundle.prepare(head, "9.8.7") == made  # made once


@pytest.mark.parametrize(("name", "problem"), [
    ("sdc-1.0.tar.gz", "is not the name of an sdc wheel"),
    ("other-1.0-py3-none-any.whl", "is not the name of an sdc wheel"),
    ("sdc-1.0-py3-none-any.whl", "not a wheel with sdc-1.0.dist-info/METADATA"),
])
def test_a_wheel_that_is_not_sdcs_is_refused(head: HeadnodeSettings, checkout_wheel: Path,
                                             tmp_path: Path, name: str, problem: str) -> None:
    data = with_version(checkout_wheel, "9.8.7", tmp_path).read_bytes()
    with pytest.raises(NodeSetupError, match=problem) as caught:
        bundle.store_wheel(head, name, data)
    assert caught.value.code == "BadWheel"
    assert bundle.stored_versions(head) == []


def test_not_a_zip_and_another_content_for_a_version_are_refused(
        head: HeadnodeSettings, checkout_wheel: Path, tmp_path: Path) -> None:
    with pytest.raises(NodeSetupError, match="not a wheel with sdc-2.0.dist-info/METADATA"):
        bundle.store_wheel(head, "sdc-2.0-py3-none-any.whl", b"not a zip")
    first = with_version(checkout_wheel, "2.0", tmp_path / "a")
    bundle.store_wheel(head, first.name, first.read_bytes())
    with pytest.raises(NodeSetupError) as caught:
        bundle.store_wheel(head, first.name, first.read_bytes() + b"\0")
    assert caught.value.code == "VersionExists"


def test_an_unknown_version_names_the_stored_ones(head: HeadnodeSettings,
                                                  checkout_wheel: Path,
                                                  tmp_path: Path) -> None:
    wheel = with_version(checkout_wheel, "3.1", tmp_path)
    bundle.store_wheel(head, wheel.name, wheel.read_bytes())
    with pytest.raises(NodeSetupError, match=r"no agent wheel of version 3.2 is stored "
                                             r"\(stored: 3.1\)"):
        bundle.prepare(head, "3.2")
    with pytest.raises(NodeSetupError, match="is not a version"):
        bundle.prepare(head, "../3.1")

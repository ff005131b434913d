"""The Debian image of ``sdc image build-debian`` for tests: built once per machine into the
image cache (``SDC_IMAGE_CACHE``, default ~/.cache/sdc/images) and reused by every later run
(a cold build takes about a minute and needs root, mmdebstrap and Debian's mirror).

    debian_image()        the BuiltImage (manifest, manifest_path, file_path), built or reused
    built_debian_image    the same as a session fixture
    missing_builder()     why this machine can neither build it nor reuse it, or None
"""

from __future__ import annotations

import functools
import os
import shutil

import pytest

from headnode.config import get_settings
from headnode.imagebuild import BuiltImage
from headnode.imagebuild_debian import build_debian_image, is_cached


@functools.cache
def debian_image() -> BuiltImage:
    """The default Debian image (bookworm, no extra packages) from the cache, built first if
    the cache lacks it; one call per process does the work."""
    built, _reused = build_debian_image(get_settings().image_cache)
    return built


def missing_builder() -> str | None:
    if is_cached(get_settings().image_cache):
        return None
    if shutil.which("mmdebstrap") is None:
        return "mmdebstrap is not installed (make deps) and the image cache has no Debian image"
    if os.geteuid() != 0:
        return "building the Debian image with mmdebstrap needs root"
    return None


@pytest.fixture(scope="session")
def built_debian_image() -> BuiltImage:
    return debian_image()

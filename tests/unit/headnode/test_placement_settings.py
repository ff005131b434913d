"""The placement policy's settings: read by the one settings loader, and a bad value stops
the process at start with an error that names the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from headnode.config import HeadnodeSettings
from schemas.settings import SettingsError, load


def test_the_defaults_are_dapis_figures_and_spread() -> None:
    s = load(HeadnodeSettings, environ={})
    assert (s.ram_overprovision, s.cpu_overprovision, s.disk_overprovision) == (1.0, 4.0, 1.0)
    assert s.placement_strategy == "spread"
    assert s.placement_filters == "headnode,traits,backend,affinity"
    assert s.placement_candidates == 100
    assert s.placement_weights == {"unreserved_ram": 2.0, "unreserved_disk": 1.0,
                                   "owner_spread": 1.0, "soft_affinity": 5.0,
                                   "uniform_random": 0.5}


def test_the_environment_and_the_file_set_them(tmp_path: Path) -> None:
    config = tmp_path / "sdc.toml"
    config.write_text('placement_strategy = "pack"\nweight_owner_spread = 0\n'
                      'placement_filters = "traits"\n')
    s = load(HeadnodeSettings, environ={"SDC_CONFIG": str(config),
                                        "SDC_CPU_OVERPROVISION": "2.5"})
    assert s.placement_strategy == "pack" and s.placement_filter_names == ("traits",)
    assert s.placement_weights["owner_spread"] == 0.0 and s.cpu_overprovision == 2.5


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("SDC_WEIGHT_OWNER_SPREAD", "-1", "a weight must be 0 or more, got -1.0"),
    ("SDC_WEIGHT_UNRESERVED_RAM", "nan", "a weight must be 0 or more"),
    ("SDC_PLACEMENT_FILTERS", "headnode,gpu", "no optional filter named 'gpu'"),
    ("SDC_PLACEMENT_FILTERS", "min-disk", "no optional filter named 'min-disk'"),
    ("SDC_PLACEMENT_STRATEGY", "stack", "must be spread or pack, got 'stack'"),
    ("SDC_PLACEMENT_CANDIDATES", "-1", "must be 0 (every server) or more, got -1"),
    ("SDC_CPU_OVERPROVISION", "0", "must be a number above 0"),
    ("SDC_RAM_OVERPROVISION", "-2", "must be a number above 0"),
    ("SDC_DISK_OVERPROVISION", "inf", "must be a number above 0"),
])
def test_a_bad_value_is_an_error_naming_the_variable(variable: str, value: str,
                                                      message: str) -> None:
    with pytest.raises(SettingsError) as refused:
        load(HeadnodeSettings, environ={variable: value})
    assert str(refused.value).startswith(f"{variable}: ")
    assert message in str(refused.value)

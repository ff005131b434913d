"""schemas.settings: where a value comes from, and how a bad one is reported."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from schemas.settings import SettingsError, describe, env_name, load, setting


@dataclasses.dataclass(frozen=True)
class Example:
    port: int = setting(8080, "Port to listen on.")
    ratio: float = setting(0.5, "A share.")
    name: str = setting("default-name", "A name.")
    debug: bool = setting(False, "Verbose logging.")
    home: Path = setting(Path("/var/lib/sdc"), "A directory.")
    label: str | None = setting(None, "Optional.")


def write_config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "sdc.toml"
    path.write_text(text)
    return str(path)


def test_defaults_when_nothing_is_set():
    assert load(Example, environ={}) == Example()


def test_env_beats_file_beats_default(tmp_path):
    config = write_config(tmp_path, 'port = 9000\nname = "from-file"\nratio = 0.25\n')
    settings = load(Example, environ={"SDC_CONFIG": config, "SDC_PORT": "9100"})
    assert settings.port == 9100  # environment wins over the file
    assert settings.name == "from-file"  # file wins over the default
    assert settings.ratio == 0.25
    assert settings.debug is False  # default when neither says anything


def test_overrides_beat_the_environment():
    settings = load(Example, environ={"SDC_PORT": "9100"}, port=9200)
    assert settings.port == 9200


def test_file_keys_are_case_insensitive(tmp_path):
    config = write_config(tmp_path, "PORT = 9001\n")
    assert load(Example, environ={"SDC_CONFIG": config}).port == 9001


def test_types_are_converted():
    settings = load(Example, environ={"SDC_RATIO": "0.75", "SDC_HOME": "~/sdc",
                                      "SDC_LABEL": "x"})
    assert settings.ratio == 0.75
    assert settings.home == Path("~/sdc").expanduser()
    assert settings.label == "x"


def test_bad_int_names_the_variable():
    with pytest.raises(SettingsError, match="SDC_PORT"):
        load(Example, environ={"SDC_PORT": "eighty"})


def test_bad_float_in_the_file_names_the_variable(tmp_path):
    config = write_config(tmp_path, 'ratio = "half"\n')
    with pytest.raises(SettingsError, match="SDC_RATIO"):
        load(Example, environ={"SDC_CONFIG": config})


def test_missing_or_broken_config_file_is_a_settings_error(tmp_path):
    with pytest.raises(SettingsError, match="SDC_CONFIG"):
        load(Example, environ={"SDC_CONFIG": str(tmp_path / "missing.toml")})
    broken = write_config(tmp_path, "port = = 1\n")
    with pytest.raises(SettingsError, match="SDC_CONFIG"):
        load(Example, environ={"SDC_CONFIG": broken})


def test_an_unknown_key_in_the_file_is_refused_naming_the_key_and_the_file(tmp_path):
    config = write_config(tmp_path, "port = 9000\nratoi = 0.25\n")
    with pytest.raises(SettingsError) as err:
        load(Example, environ={"SDC_CONFIG": config})
    message = str(err.value)
    assert config in message and "'ratoi'" in message
    assert "did you mean 'ratio'?" in message


def test_every_unknown_key_is_named_at_once(tmp_path):
    config = write_config(tmp_path, "colour = 1\nNAMES = 'x'\n")
    with pytest.raises(SettingsError, match="unknown keys 'colour', 'names'"):
        load(Example, environ={"SDC_CONFIG": config})


def test_an_unknown_variable_in_the_environment_is_not_the_files_business():
    # SDC_API_URL and friends are read by other parts (the sdc client); only the file is
    # one process's own
    assert load(Example, environ={"SDC_COLOUR": "blue"}) == Example()


@pytest.mark.parametrize("raw", ["1", "true", "TRUE", "yes", "on", " True "])
def test_bool_true_spellings(raw):
    assert load(Example, environ={"SDC_DEBUG": raw}).debug is True


@pytest.mark.parametrize("raw", ["0", "false", "no", "off", "", "False"])
def test_bool_false_spellings(raw):
    assert load(Example, environ={"SDC_DEBUG": raw}).debug is False


def test_bool_from_the_file_is_taken_as_is(tmp_path):
    config = write_config(tmp_path, "debug = true\n")
    assert load(Example, environ={"SDC_CONFIG": config}).debug is True


def test_bad_bool_names_the_variable():
    with pytest.raises(SettingsError, match="SDC_DEBUG"):
        load(Example, environ={"SDC_DEBUG": "maybe"})


def test_describe_lists_every_setting_with_help():
    rows = describe(Example)
    assert [row[0] for row in rows] == [env_name(f.name) for f in dataclasses.fields(Example)]
    assert rows[0] == ("SDC_PORT", "8080", "Port to listen on.")
    assert all(help_text for _, _, help_text in rows)

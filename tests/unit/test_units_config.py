import pytest

from memguard.config import Config, ConfigError, load_config, parse_config
from memguard.units import format_bytes, parse_duration, parse_size


@pytest.mark.parametrize("text,seconds", [("250ms", 0.25), ("2s", 2.0), ("1.5m", 90.0), ("1h", 3600.0), ("90d", 90 * 86400.0),
                                          (3, 3.0), ("7", 7.0)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text,size", [("512MiB", 512 * 2**20), ("8GB", 8 * 10**9), ("4096", 4096),
                                       (1024, 1024), ("1.5GiB", 3 * 2**29), ("64kib", 65536)])
def test_sizes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["fast", "2 weeks", "-1s", "1w"])
def test_bad_duration_says_what_was_expected(bad):
    with pytest.raises(ValueError, match="expected a duration|negative"):
        parse_duration(bad)


def test_format_bytes():
    assert format_bytes(None) == "-"
    assert format_bytes(512) == "512B"
    assert format_bytes(3 * 2**30 // 2) == "1.5GiB"


def test_empty_config_is_the_defaults():
    assert parse_config("") == Config()


def test_values_get_units_resolved():
    c = parse_config("sampling:\n  interval: 2s\n  fast_interval: 100ms\ncgroups:\n  exclude: ['/system.slice/*']\n")
    assert c.sampling.interval == 2.0 and c.sampling.fast_interval == 0.1
    assert c.cgroups.exclude == ("/system.slice/*",)


@pytest.mark.parametrize("text,line,key,what", [
    ("sampling:\n  interval: 1s\n  intervall: 2s\n", 3, "sampling.intervall", "unknown key"),
    ("metrics:\n  listen: 1\n", 2, "metrics.listen", "expected a string"),
    ("cgroups:\n  max_tracked: many\n", 2, "cgroups.max_tracked", "expected an integer"),
    ("cgroups:\n  include: '/a'\n", 2, "cgroups.include", "expected a list"),
    ("sampling: 5\n", 1, "sampling", "expected a mapping"),
    ("\n\nsampling:\n  interval: soon\n", 4, "sampling.interval", "expected a duration"),
    ("sampling:\n  fast_above: -1\n", 2, "sampling.fast_above", "must not be negative"),
    ("processes:\n  top: 3\nprocesses:\n  top: 4\n", 3, "processes", "given twice"),
])
def test_errors_name_file_line_and_key(text, line, key, what):
    with pytest.raises(ConfigError) as e:
        parse_config(text, "memguard.yaml")
    assert (e.value.source, e.value.line, e.value.key) == ("memguard.yaml", line, key)
    assert what in e.value.message
    assert str(e.value).startswith(f"memguard.yaml:{line}: {key}: ")


def test_yaml_syntax_error_has_a_line():
    with pytest.raises(ConfigError) as e:
        parse_config("a: [\n", "x.yaml")
    assert e.value.line is not None and "not valid YAML" in e.value.message


def test_a_string_key_written_off_is_the_word_not_a_bool():
    assert parse_config("wsl:\n  wslconfig: off\n").wsl.wslconfig == "off"


def test_shipped_default_config_loads():
    c = load_config("packaging/memguard.yaml")
    assert c.metrics.listen == "127.0.0.1:9717"
    assert c.sampling.interval == 1.0


def test_rule_files_are_relative_to_the_config_file_normalised_and_read_once(tmp_path):
    (tmp_path / "rules").mkdir()
    for name in ("b.yaml", "a.yaml"):
        (tmp_path / "rules" / name).write_text("rules: []\n")
    (tmp_path / "etc").mkdir()
    config = tmp_path / "etc" / "memguard.yaml"
    config.write_text("rules:\n  files: ['../rules/*.yaml', '../rules/../rules/a.yaml']\n")
    assert load_config(str(config)).rule_files() == [
        str(tmp_path / "rules" / "a.yaml"), str(tmp_path / "rules" / "b.yaml")]

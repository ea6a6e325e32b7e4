"""Config parsing: every user mistake is one line naming file, line and key."""
import pytest

from xe_guest_agent import config


def test_defaults_come_from_the_package_version():
    from xe_guest_agent import __version__
    c = config.load("/dev/null")
    assert [c.major_version, c.minor_version, c.micro_version] == [int(x) for x in __version__.split(".")[:3]]
    assert c.flag_file == "/etc/pv-drivers-not-upgradable" and c.log_level == "warning"
    assert c.memory_threshold_kib(2048000) == 20480   # 1% of MemTotal: idle jitter is not written


def test_file_then_flags(tmp_path):
    f = tmp_path / "agent.conf"
    f.write_text("# appliance\nmajor_version = 8\n; comment\n\nbuild_version=77\nfeature_balloon = no\n")
    c = config.load(str(f), {"major_version": "9", "minor_version": None})
    assert (c.major_version, c.build_version, c.feature_balloon) == (9, 77, False)


def test_missing_default_file_is_fine_missing_explicit_is_not(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "DEFAULT_CONFIG", str(tmp_path / "absent.conf"))
    assert config.load().major_version >= 0
    with pytest.raises(config.ConfigError, match="no such config file"):
        config.load(str(tmp_path / "absent.conf"))


@pytest.mark.parametrize("text, message", [
    ("major_version = 1.2\n", "agent.conf:1: major_version = '1.2': must be a non-negative integer"),
    ("\n\nminor_version = -1\n", "agent.conf:3: minor_version = '-1'"),
    ("build_version = proto-0.5.0-dev\n", "build_version"),
    ("micro_version = ٣\n", "micro_version"),            # a non-ASCII digit is not a version
    ("colour = blue\n", "agent.conf:1: unknown key 'colour'"),
    ("just words\n", "agent.conf:1: expected 'key = value'"),
    ("flag_file = relative/path\n", "must be an absolute path"),
    ("memory_interval = 0\n", "memory_interval"),
    ("memory_interval = nan\n", "memory_interval"),
    ("log_level = loud\n", "must be one of"),
    ("major_version = 4611686018427387904\n", "major_version = '4611686018427387904': too large"),
    ("build_version = %s\n" % ("9" * 5000), "too large: must be at most 4611686018427387903"),
    ("minor_version = 3;4\n", "must be a non-negative integer"),   # no space before ';': not a comment
])
def test_bad_config_names_file_line_and_key(tmp_path, text, message):
    f = tmp_path / "agent.conf"
    f.write_text(text)
    with pytest.raises(config.ConfigError) as e:
        config.load(str(f))
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_binary_config_is_refused(tmp_path):
    f = tmp_path / "agent.conf"
    f.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(config.ConfigError, match="not UTF-8"):
        config.load(str(f))


def test_bad_flag_value_names_the_flag():
    with pytest.raises(config.ConfigError, match="--major-version"):
        config.load("/dev/null", {"major_version": "x"})


@pytest.mark.parametrize("text, total, kib", [("1%", 2048000, 20480), ("0.5%", 1000000, 5000), ("4096", 10 ** 9, 4096),
                                               ("0", 100, 0)])
def test_memory_threshold_in_kib_or_percent(tmp_path, text, total, kib):
    f = tmp_path / "agent.conf"
    f.write_text("memory_threshold = %s\n" % text)
    assert config.load(str(f)).memory_threshold_kib(total) == kib


@pytest.mark.parametrize("text", ["-1", "101%", "x%", "1.5", "%"])
def test_bad_memory_threshold(tmp_path, text):
    f = tmp_path / "agent.conf"
    f.write_text("memory_threshold = %s\n" % text)
    with pytest.raises(config.ConfigError, match="memory_threshold .* must be KiB"):
        config.load(str(f))


def test_comments_after_values(tmp_path):
    f = tmp_path / "agent.conf"
    f.write_text("major_version = 8   # appliance\nminor_version=4\t; why\nflag_file = /etc/a#b # the flag\n"
                 "build_version = 4611686018427387903\n")
    c = config.load(str(f))
    assert (c.major_version, c.minor_version, c.flag_file) == (8, 4, "/etc/a#b")
    assert c.build_version == (1 << 62) - 1


def test_empty_config_path_is_an_error_not_the_default():
    with pytest.raises(config.ConfigError, match="--config: empty path"):
        config.load("")

"""The agent's settings: defaults, then the config file, then command-line flags.

The file is `key = value` lines; `#` and `;` start comments, at the start of a line or after a
space. A missing file is fine; anything else wrong with it is a ConfigError naming the file, line
and key, so the user can fix it.
"""
import logging
import os
import re
import stat

from . import __version__

DEFAULT_CONFIG = "/etc/xe-guest-agent/agent.conf"
DEFAULT_FLAG_FILE = "/etc/pv-drivers-not-upgradable"
LOG_LEVELS = ("debug", "info", "warning", "error")
MAX_SIZE = 1 << 20   # bytes: a config file is a few lines
# xapi parses the version keys with OCaml's int_of_string (63-bit): above this, the host sees no PV drivers.
OCAML_MAX_INT = (1 << 62) - 1


class ConfigError(Exception):
    """A mistake the user made; its text is the one line we print before exiting with status 2."""


def _version_defaults():
    parts = [int(p) for p in __version__.split(".")[:4] if p.isdigit()]
    parts += [0] * (4 - len(parts))
    return parts


class Config:
    """The settings; built from keyword arguments, any one left out takes its default."""
    DEFAULTS = dict(
        major_version=_version_defaults()[0],
        minor_version=_version_defaults()[1],
        micro_version=_version_defaults()[2],
        build_version=_version_defaults()[3],
        flag_file=DEFAULT_FLAG_FILE,
        log_level="warning",
        memory_interval=60.0,      # seconds between /proc/meminfo reads
        memory_threshold="1%",     # KiB, or % of MemTotal: smaller moves of meminfo_free are not written
        feature_balloon=True,      # publish control/feature-balloon = 1
        max_addresses=16,          # per VIF and address family
    )

    def __init__(self, **values):
        unknown = set(values) - set(self.DEFAULTS)
        if unknown:
            raise TypeError("unknown settings: %s" % ", ".join(sorted(unknown)))
        self.__dict__.update(self.DEFAULTS, **values)

    def __eq__(self, other):
        return isinstance(other, Config) and vars(self) == vars(other)

    def __repr__(self):
        return "Config(%s)" % ", ".join("%s=%r" % (k, getattr(self, k)) for k in self.DEFAULTS)

    def memory_threshold_kib(self, total_kib):
        """The threshold in KiB for a guest with `total_kib` of memory."""
        if self.memory_threshold.endswith("%"):
            return int(total_kib * float(self.memory_threshold[:-1]) / 100)
        return int(self.memory_threshold)

    @property
    def logging_level(self):
        return getattr(logging, self.log_level.upper())


def _non_negative_int(text):
    if not re.match(r"[0-9]+\Z", text):   # not isdigit(): no other script's digits
        raise ValueError("must be a non-negative integer")
    if len(text.lstrip("0")) > len(str(OCAML_MAX_INT)):   # before int(): 3.11+ refuses 4300+ digits
        raise ValueError("too large: must be at most %d" % OCAML_MAX_INT)
    return int(text)


def _version(text):
    value = _non_negative_int(text)
    if value > OCAML_MAX_INT:
        raise ValueError("too large: must be at most %d" % OCAML_MAX_INT)
    return value


def _positive_number(text):
    value = float(text)
    if not value > 0 or value != value or value == float("inf"):
        raise ValueError("must be a positive number of seconds")
    return value


def _boolean(text):
    low = text.lower()
    if low in ("1", "yes", "true", "on"):
        return True
    if low in ("0", "no", "false", "off"):
        return False
    raise ValueError("must be yes or no")


def _threshold(text):
    if text.endswith("%"):
        try:
            value = float(text[:-1])
        except ValueError:
            value = -1.0
        if not 0 <= value <= 100:
            raise ValueError("must be KiB (an integer) or a percentage of MemTotal (0% to 100%)")
        return text
    try:
        return str(_non_negative_int(text))
    except ValueError:
        raise ValueError("must be KiB (an integer) or a percentage of MemTotal (0% to 100%)") from None


def _log_level(text):
    if text.lower() not in LOG_LEVELS:
        raise ValueError("must be one of " + ", ".join(LOG_LEVELS))
    return text.lower()


def _path(text):
    if not text.startswith("/"):
        raise ValueError("must be an absolute path")
    return text


PARSERS = {
    "major_version": _version,
    "minor_version": _version,
    "micro_version": _version,
    "build_version": _version,
    "flag_file": _path,
    "log_level": _log_level,
    "memory_interval": _positive_number,
    "memory_threshold": _threshold,
    "feature_balloon": _boolean,
    "max_addresses": _non_negative_int,
}


def parse(text, name="<config>"):
    """{key: value} from the text of a config file; ConfigError on the first bad line."""
    values = {}
    for number, line in enumerate(text.splitlines(), 1):
        # A comment starts a line, or follows a space: `/a#b` is a value, `8  # why` is 8.
        line = re.split(r"\s[#;]", line.strip(), maxsplit=1)[0].rstrip()
        if not line or line[0] in "#;":
            continue
        key, sep, value = (s.strip() for s in line.partition("="))
        where = "%s:%d" % (name, number)
        if not sep or not key:
            raise ConfigError("%s: expected 'key = value', got %r" % (where, line[:60]))
        if key not in PARSERS:
            raise ConfigError("%s: unknown key %r (known: %s)" % (where, key[:40], ", ".join(sorted(PARSERS))))
        values[key] = _convert(key, value, where)
    return values


def _convert(key, value, where):
    try:
        return PARSERS[key](value)
    except ValueError as e:
        reason = str(e) if "must" in str(e) else "must be a number"
        raise ConfigError("%s: %s = %r: %s" % (where, key, value[:40], reason)) from None


def load(path=None, overrides=None):
    """Config from defaults, the file at `path` (default DEFAULT_CONFIG) and `overrides`.

    `overrides` holds command-line values as text; None entries are ignored.
    """
    explicit = path is not None
    if path == "":   # `--config ""`: a mistake, not a request for the default file
        raise ConfigError("--config: empty path")
    path = path or DEFAULT_CONFIG
    values = {}
    try:
        # O_NONBLOCK: a FIFO put there must not hang the start. A file, or /dev/null.
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISCHR(mode)):
                raise ConfigError("%s: not a regular file" % path)
            raw = f.read(MAX_SIZE + 1)
    except FileNotFoundError:
        if explicit:
            raise ConfigError("%s: no such config file" % path) from None
        raw = b""
    except OSError as e:
        raise ConfigError("%s: cannot read: %s" % (path, e.strerror)) from None
    if len(raw) > MAX_SIZE:
        # Cut short, it could end in a setting cut in two (12 read as 1): refuse the whole file.
        raise ConfigError("%s: too big for a config file (over %d bytes)" % (path, MAX_SIZE))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError("%s: not UTF-8 text (byte %d)" % (path, e.start)) from None
    values.update(parse(text, path))
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = _convert(key, str(value), "--" + key.replace("_", "-"))
    return Config(**values)

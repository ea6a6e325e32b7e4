"""The data/os_* keys: which distribution and kernel the guest runs.

/etc/os-release (or /usr/lib/os-release) answers on anything released since about 2012; older
systems get a small table over their own release files. Every source is first turned into
os-release fields (PRETTY_NAME, ID, VERSION_ID), so one function makes the keys.
"""
import os
import re
import stat

from ..schema import safe_value

# Release files are a few hundred bytes; a bigger one is broken and we only need its start.
READ_LIMIT = 64 * 1024

# Sanitised ID -> the id the Go agent writes; management UIs pick icons by it. Every other ID
# (debian, ubuntu, rhel, centos, rocky, almalinux, fedora, sles, alpine, arch, gentoo, amzn,
# cloudlinux, kylin, ...) already is that id. The lsb-release spellings come from old systems.
DISTROS = {
    "ol": "oracle",
    "opensuse-leap": "opensuse",
    "opensuse-tumbleweed": "opensuse",
    "opensuse-microos": "opensuse",
    "sles_sap": "sles",
    "redhatenterpriseserver": "rhel",
    "oracleserver": "oracle",
    "enterpriseenterpriseserver": "oracle",
    "suselinux": "sles",
    "opensuseproject": "opensuse",
}

# Rolling distributions whose VERSION_ID is a snapshot date or a base-files version, not a release.
ROLLING = {"arch", "gentoo", "opensuse-tumbleweed", "opensuse-microos"}

# Pre-os-release files, most specific first: Oracle Linux's redhat-release claims to be RHEL.
RELEASE_FILES = ("oracle-release", "enterprise-release", "redhat-release", "SuSE-release")
# (pattern on the file's first line, distro); first match wins.
RELEASE_NAMES = (
    (r"^(Oracle|Enterprise Linux)", "oracle"),
    (r"^CentOS", "centos"),
    (r"^CloudLinux", "cloudlinux"),
    (r"^Red Hat Enterprise Linux", "rhel"),
    (r"^Fedora", "fedora"),
    (r"^Scientific Linux", "scientific"),
    (r"^Rocky Linux", "rocky"),
    (r"^AlmaLinux", "almalinux"),
    (r"^SUSE Linux Enterprise Desktop", "sled"),
    (r"^SUSE Linux Enterprise", "sles"),
    (r"^openSUSE", "opensuse"),
)

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# One piece of a value: 'single', "double", \x, or a run of plain characters.
_PIECE = re.compile(r"""'([^']*)'|"((?:[^"\\]|\\.)*)"|\\(.)|([^'"\\]+)""", re.S)
# Inside double quotes only these four are escapes; any other backslash is literal.
_DQ_ESCAPE = re.compile(r"\\([\"\\$`])")
_DIGITS = re.compile(r"[0-9]+")


def parse(text):
    """Parse os-release syntax (also lsb-release and SuSE-release's `KEY = value`) into a dict.

    Shell-like as the freedesktop spec and systemd read it: single quotes are literal, double
    quotes honour \\" \\\\ \\$ \\` (other backslashes stay), comments, blank lines and lines
    without a valid KEY= are skipped, the last assignment wins. Garbage never raises.
    """
    fields = {}
    for line in text.split("\n"):
        key, sep, rest = line.strip().partition("=")
        key = key.strip()
        if sep and _KEY.match(key):
            fields[key] = _unquote(rest.strip())
    return fields


def _unquote(raw):
    out = []
    for m in _PIECE.finditer(raw):
        single, double, escaped, plain = m.groups()
        if double is not None:
            out.append(_DQ_ESCAPE.sub(r"\1", double))
        else:
            out.append(next(p for p in (single, escaped, plain) if p is not None))
    return "".join(out)


def _read(path):
    """The start of a regular file as text, or None. Never blocks on a FIFO, never raises."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except (OSError, ValueError):
        return None
    try:
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return None
            return f.read(READ_LIMIT).decode("utf-8", "replace")
    except OSError:
        return None


def _first_line(text):
    return text.strip().split("\n", 1)[0].strip()


def _os_release(etc, usr_lib):
    # An empty or garbled file is no answer: try the next source rather than report nothing.
    for path in (os.path.join(etc, "os-release"), os.path.join(usr_lib, "os-release")):
        fields = parse(_read(path) or "")
        if any(fields.get(k, "").strip() for k in ("ID", "NAME", "PRETTY_NAME")):
            return fields
    return None


def _release_file(etc):
    """redhat-release and friends: "CentOS release 6.10 (Final)"; SuSE-release: VERSION = 11."""
    for name in RELEASE_FILES:
        text = _read(os.path.join(etc, name)) or ""
        first = _first_line(text)
        if not first:
            continue
        fields = {"PRETTY_NAME": first}
        distro = next((d for pattern, d in RELEASE_NAMES if re.search(pattern, first, re.I)), None)
        if distro:
            fields["ID"] = distro
        suse = parse(text)  # "VERSION = 11" and "PATCHLEVEL = 4" below the name
        release = re.search(r"\brelease\s+([0-9][0-9.]*)", first)
        update = re.search(r"\bUpdate\s+([0-9]+)", first)  # RHEL 3/4: "release 4 (Nahant Update 6)"
        if "VERSION" in suse:
            fields["VERSION_ID"] = ".".join(v for v in (suse["VERSION"], suse.get("PATCHLEVEL")) if v)
        elif release:
            version = release.group(1).rstrip(".")
            if update and "." not in version:
                version += "." + update.group(1)
            fields["VERSION_ID"] = version
        return fields
    return None


def _lsb_release(etc):
    lsb = parse(_read(os.path.join(etc, "lsb-release")) or "")
    if not lsb.get("DISTRIB_ID", "").strip():
        return None  # RHEL's lsb-release only has LSB_VERSION
    return {"PRETTY_NAME": lsb.get("DISTRIB_DESCRIPTION", ""), "NAME": lsb["DISTRIB_ID"],
            "VERSION": lsb.get("DISTRIB_RELEASE", ""), "ID": lsb["DISTRIB_ID"],
            "VERSION_ID": lsb.get("DISTRIB_RELEASE", "")}


def _debian_version(etc):
    first = _first_line(_read(os.path.join(etc, "debian_version")) or "")
    if not first:
        return None
    return {"PRETTY_NAME": "Debian " + first, "ID": "debian", "VERSION_ID": first}


def _keys(fields, uname):
    raw_id = re.sub(r"[^a-z0-9_-]", "", fields.get("ID", "").lower())
    distro = DISTROS.get(raw_id, raw_id)
    major = minor = ""
    if raw_id not in ROLLING:
        parts = fields.get("VERSION_ID", "").strip().split(".")
        if _DIGITS.fullmatch(parts[0]):
            major = parts[0]
            if len(parts) > 1 and _DIGITS.fullmatch(parts[1]):
                minor = parts[1]
    name = safe_value(fields.get("PRETTY_NAME", "")) or " ".join(
        v for v in (fields.get("NAME", ""), fields.get("VERSION", "")) if v.strip())
    values = {
        "data/os_name": name,
        # os_distro "windows" switches xapi to its Windows rules: never claim it.
        "data/os_distro": "" if distro == "windows" else distro,
        "data/os_majorver": major,
        "data/os_minorver": minor,
        "data/os_uname": uname,
    }
    return {k: v for k, v in ((k, safe_value(v)) for k, v in values.items()) if v}


def collect(root="/", uname=None):
    """The data/os_* keys for the system under `root`, as {relative path: value}; never raises.

    Keys whose value is unknown are left out rather than guessed.
    """
    etc, usr_lib = os.path.join(root, "etc"), os.path.join(root, "usr", "lib")
    fields = (_os_release(etc, usr_lib) or _release_file(etc) or _lsb_release(etc)
              or _debian_version(etc) or {})
    return _keys(fields, os.uname().release if uname is None else uname)

"""The XenStore keys the agent owns, the order the host needs them in, and what a value may be.

All paths are relative to the guest's home (/local/domain/<domid>).
"""
import re
import unicodedata

PVADDONS = "attr/PVAddons"
VERSION_KEYS = ("MajorVersion", "MinorVersion", "MicroVersion", "BuildVersion")
INSTALLED = PVADDONS + "/Installed"
NOT_UPGRADABLE = PVADDONS + "/NotUpgradable"
UPDATED = "data/updated"
UNIQUE_DOMAIN_ID = "unique-domain-id"
DOMID = "domid"
# What tells one domain from the next: xenopsd writes a new unique-domain-id on every resume and
# migration, the xl toolstack writes none, and a restored or migrated domain gets a new domid.
IDENTITY = (UNIQUE_DOMAIN_ID, DOMID)

OS_KEYS = ("data/os_name", "data/os_distro", "data/os_majorver", "data/os_minorver", "data/os_uname")
MEMORY_KEYS = ("data/meminfo_total", "data/meminfo_free")
FEATURE_BALLOON = "control/feature-balloon"
# xapi's netbios_name["host_name"]: data/host_name_dns, then "." and data/domain if present.
HOST_NAME, DOMAIN = "data/host_name_dns", "data/domain"
HOST_NAME_KEYS = (HOST_NAME, DOMAIN)
# xapi's can_use_hotplug_vif / can_use_hotplug_vbd: "1" yes, "0" no, absent unspecified.
HOTPLUG_VIF, HOTPLUG_VBD = "feature/hotplug/vif", "feature/hotplug/vbd"
HOTPLUG_KEYS = (HOTPLUG_VIF, HOTPLUG_VBD)

# What current xenopsd watches of the keys we write (docs/host-contract.md section 2). It reads data/*
# only when one of these fires, so a batch that changes data/* alone must touch one of them.
HOST_WATCHED = ("attr/", "control/", "feature/", "xenserver/attr/")
# data/ keys that need no such touch: xapi keeps no memory in VM_guest_metrics (the RRD's comes
# from xcp-rrdd's own watch on data/meminfo_free), so a memory move alone is not worth a look.
HOST_IGNORED = MEMORY_KEYS

# Subtrees the agent owns outright: anything found below them that it did not put there is stale.
OWNED_SUBTREES = ("attr/vif", "xenserver/attr/net-sriov-vf")

# Keys the agent owns one by one: absent from the desired state means "remove if present".
OWNED_KEYS = (tuple(PVADDONS + "/" + k for k in VERSION_KEYS) + (INSTALLED, NOT_UPGRADABLE) + OS_KEYS + MEMORY_KEYS
              + HOST_NAME_KEYS + HOTPLUG_KEYS)

# What the agent watches: a change below any of these by someone else is repaired.
WATCHED = IDENTITY + (PVADDONS, "data", "attr/vif", "control/feature-balloon", "xenserver/attr",
           "xenserver/device/net-sriov-vf", "feature/hotplug")

# The longest value we write. docs/host-contract.md says 2024 (a 24-byte header against C xenstored's
# 2048-byte node), but each permission costs 8 bytes more: measured on Xen 4.17, a guest's node
# holds 2015 bytes with one permission and 1999 with three. Over it, the write fails and takes
# the whole transaction's commit with it.
MAX_VALUE = 1999

_PATH = re.compile(r"^[A-Za-z0-9_@/-]+$")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]+")


def valid_path(path):
    """True if xenstored would accept `path` as a relative key (no '.', ':' or '//')."""
    return bool(_PATH.match(path)) and "//" not in path and not path.startswith("/") and not path.endswith("/")


def safe_value(text, limit=MAX_VALUE):
    """Make `text` a value both xenstored and pyxs accept: printable ASCII, at most `limit` bytes.

    Accented letters lose their accents (NFKD), other non-ASCII characters become '?', runs of
    control characters (tabs, newlines, escapes) become one space, and the ends are stripped.
    An empty result means "leave the key out": pyxs refuses empty values.
    """
    text = unicodedata.normalize("NFKD", str(text))
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = text.encode("ascii", "replace").decode("ascii")
    text = _UNSAFE.sub(" ", text).strip()
    return text[:limit].rstrip()


def write_rank(path):
    """Sort key for a batch: data/* first, then attr/* and the rest, data/updated last."""
    if path == UPDATED:
        return 2
    return 0 if path.startswith("data/") else 1


def owned(path):
    """True if the agent is responsible for `path` (a key it writes, or one below an owned subtree)."""
    return path in OWNED_KEYS or any(path == t or path.startswith(t + "/") for t in OWNED_SUBTREES)

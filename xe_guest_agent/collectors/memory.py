"""The data/meminfo_* keys: total and free memory in KiB, as the host's RRDs and squeezed read them."""
import re

TOTAL, FREE = "data/meminfo_total", "data/meminfo_free"

# /proc/meminfo is ~1.5 KiB; the limit only protects against a path pointing somewhere odd.
READ_LIMIT = 64 * 1024
_LINE = re.compile(r"^(\w+):[ \t]*([0-9]{1,20})(?:[ \t]+kB)?[ \t]*$", re.M)


def collect(path="/proc/meminfo"):
    """{TOTAL: KiB, FREE: KiB} as decimal strings; keys that cannot be read are left out.

    Free is MemAvailable (what can be allocated without swapping), or MemFree on kernels
    older than 3.14 that lack it. Never raises.
    """
    try:
        with open(path, "rb") as f:
            text = f.read(READ_LIMIT).decode("ascii", "replace")
    except (OSError, ValueError):
        return {}
    fields = {name: str(int(kib)) for name, kib in _LINE.findall(text)}
    free = fields.get("MemAvailable", fields.get("MemFree"))
    keys = {TOTAL: fields.get("MemTotal"), FREE: free}
    return {k: v for k, v in keys.items() if v is not None}


def changed(previous, new, threshold_kib):
    """True if `new` is worth publishing over `previous`: the keys differ, the total differs, or
    free moved by more than `threshold_kib` (0: any change). Pure."""
    if previous.keys() != new.keys():
        return True
    for key, value in new.items():
        if key == FREE:
            try:
                if abs(int(value) - int(previous[key])) > max(threshold_kib, 0):
                    return True
                continue
            except (TypeError, ValueError):
                pass  # not ours to judge: compare as text
        if value != previous[key]:
            return True
    return False

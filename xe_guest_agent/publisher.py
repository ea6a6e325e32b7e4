"""The pure core: what should be in XenStore, and the ordered writes that make it so.

Nothing here does I/O. The shell (agent.py) feeds in what the collectors found and what it
read back from XenStore, and carries out the plan in one transaction.
"""
import collections

from . import schema

Step = collections.namedtuple("Step", "op path value")   # op: "write" or "rm"


def desired_state(config, flag_present, extra=None):
    """{key: value} the agent should publish: versions, Installed, NotUpgradable, plus `extra`
    (what the other collectors found: OS, memory, addresses, feature flags)."""
    state = {
        schema.PVADDONS + "/MajorVersion": str(config.major_version),
        schema.PVADDONS + "/MinorVersion": str(config.minor_version),
        schema.PVADDONS + "/MicroVersion": str(config.micro_version),
        schema.PVADDONS + "/BuildVersion": str(config.build_version),
        schema.INSTALLED: "1",
    }
    if flag_present:
        state[schema.NOT_UPGRADABLE] = "1"
    for key, value in (extra or {}).items():
        if value:   # an empty value means "unknown": leave the key out
            state[key] = value
    return state


def plan(desired, actual, updated):
    """Ordered steps that turn `actual` (the agent's keys as XenStore holds them) into `desired`.

    Writes and removals go data/* first, then attr/* and the rest; if there is anything to do,
    `data/updated` = `updated` comes last so a host that watches it re-reads a complete tree. A
    batch whose changes all lie in data/ also rewrites Installed, which today's xenopsd does
    watch (it reads data/ only then), unless they are all memory keys (schema.HOST_IGNORED).
    A key below an owned subtree whose whole branch is stale is removed with its branch.
    """
    steps = [Step("write", k, v) for k, v in desired.items() if actual.get(k) != v and k != schema.UPDATED]
    steps += [Step("rm", p, None) for p in _removals(desired, actual)]
    if not steps and schema.UPDATED in actual:
        return []   # a missing data/updated is itself a change: squeezed reads it as "agent present"
    if (schema.INSTALLED in desired and not any(s.path.startswith(schema.HOST_WATCHED) for s in steps)
            and any(s.path.startswith("data/") and s.path not in schema.HOST_IGNORED for s in steps)):
        # Current xenopsd does not watch data/: rewriting Installed (same value) makes it look.
        steps.append(Step("write", schema.INSTALLED, desired[schema.INSTALLED]))
    steps.sort(key=lambda s: (schema.write_rank(s.path), s.path))
    return steps + [Step("write", schema.UPDATED, updated)]


def _removals(desired, actual):
    stale = [k for k in actual if k not in desired and k != schema.UPDATED]
    live = [k for k in actual if k in desired] + list(desired)
    out = set()
    for key in stale:
        root = next((t for t in schema.OWNED_SUBTREES if key.startswith(t + "/")), None)
        target = key
        if root:
            # The shallowest branch below the subtree root that holds nothing live goes whole.
            parts = key[len(root) + 1:].split("/")
            for depth in range(1, len(parts) + 1):
                branch = root + "/" + "/".join(parts[:depth])
                if not any(k == branch or k.startswith(branch + "/") for k in live):
                    target = branch
                    break
        out.add(target)
    # Drop removals already covered by a removal of an ancestor.
    return sorted(p for p in out if not any(p.startswith(q + "/") for q in out))


def next_updated(previous, now_ms):
    """A `data/updated` value different from `previous`: milliseconds since the epoch,
    pushed past `previous` when the clock stands still or goes back."""
    try:
        last = int(previous)
    except (TypeError, ValueError):
        return str(now_ms)
    return str(max(now_ms, last + 1))

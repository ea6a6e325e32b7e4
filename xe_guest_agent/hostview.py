"""What xapi makes of a guest's XenStore tree, by the host's own rules: a tree in, a view and a list
of warnings out (pure, no I/O; `status --host` feeds it what it read).

The functions follow xapi-project/xen-api (master of 2026-08) step by step, in its own order:
- xenopsd's look (ocaml/xenopsd/xc/xenops_server_xen.ml, the `guest_agent` list): which roots,
  how deep, attr/os/hotfixes skipped, values recoded as UTF-8; the list comes out in the reverse
  of the walk, and its order decides some of what follows;
- xapi's `lookup` and `list` over that list (ocaml/xapi/xapi_xenops.ml, update_vm_internal);
- Xapi_guest_agent.networks and get_initial_guest_metrics (ocaml/xapi/xapi_guest_agent.ml),
  pinned by xapi's own cases in tests/test_hostview.py (ocaml/tests/test_guest_agent.ml);
- Xapi_pv_driver_version.get_drivers_version: a version key that OCaml's int_of_string refuses
  means "no PV drivers" (runtime/ints.c parse_intnat, below as ocaml_int);
- PV_drivers_up_to_date: today xapi sets it to PV_drivers_detected (xapi_xenops.ml), which xenopsd
  sets when a backend of the domain reaches state 4, Connected (maybe_update_pv_drivers_detected).
  No released xapi reads attr/PVAddons/NotUpgradable; the 2010 proposal's host forces it true.
  The view gives both answers.
- memory_internal_free: xcp-rrdd's squeezed plugin reads data/meminfo_free with Int64.of_string.

Paths are relative to the guest's home. Values may be bytes (as read) or str.
"""
import re

# -- OCaml's integer parsing -----------------------------------------------------------------------


def _digit(c):
    if "0" <= c <= "9":
        return ord(c) - 48
    if "a" <= c <= "f" or "A" <= c <= "F":
        return ord(c.lower()) - 87
    return -1


def ocaml_int(text, nbits=63):
    """int_of_string (nbits 63) or Int64.of_string (nbits 64) as OCaml's runtime parses: an
    optional sign, an optional 0x/0o/0b/0u prefix, digits with '_' allowed after the first, nothing
    else (no spaces, no newline). Decimal must fit the signed range; prefixed values may use all
    nbits bits and wrap. The int, or None where OCaml raises Failure."""
    if not isinstance(text, str):
        return None
    s, i, n = text, 0, len(text)
    sign = 1
    if i < n and s[i] in "-+":
        sign = -1 if s[i] == "-" else 1
        i += 1
    base, signed = 10, True
    if i + 1 < n and s[i] == "0" and s[i + 1] in "xXoObBuU":
        base = {"x": 16, "o": 8, "b": 2, "u": 10}[s[i + 1].lower()]
        signed = False
        i += 2
    if i >= n or not 0 <= _digit(s[i]) < base:
        return None
    res = _digit(s[i])
    for c in s[i + 1:]:
        if c == "_":
            continue
        d = _digit(c)
        if not 0 <= d < base:
            return None
        res = res * base + d
        if res >= 1 << 64:   # the unsigned machine word overflowed
            return None
    if signed and res >= (1 << (nbits - 1)) + (sign < 0):
        return None
    if not signed and nbits < 64 and res >= 1 << nbits:
        return None
    value = (-res if sign < 0 else res) & ((1 << nbits) - 1)   # the machine's wrap-around
    return value - (1 << nbits) if value >= 1 << (nbits - 1) else value


def canonical(text):
    """True if `text` is how the int it parses to prints (what a UI shows is what xapi read)."""
    value = ocaml_int(text)
    return value is not None and str(value) == text


# -- xenopsd's look and xapi's lookup/list ---------------------------------------------------------

# (root, excluded, depth) in xenopsd's order. depth: how many directories it descends below the
# root; the keys one level further are still read, nothing below them.
XENOPSD_ROOTS = (("control", (), 0), ("feature/hotplug", (), 0), ("xenserver/attr", (), 3),
                 ("attr", ("attr/os/hotfixes",), 3), ("drivers", (), 0), ("data", (), 0),
                 ("data/service", (), 1), ("data/pvs_target", (), 0))
# What each guest-writable tree's readers reach, for the warnings about what lies beyond.
REACH = {"attr": "attr/ four levels deep (attr/vif/<devid>/ipv4/<n>)",
         "xenserver": "xenserver/attr/ four levels deep",
         "data": "data/ one level deep, data/service/<name>/<key> and data/pvs_target/<key>",
         "control": "control/ one level deep", "drivers": "drivers/ one level deep",
         "feature": "only feature/hotplug/<key> below feature/"}


class Tree:
    """{path: value} as read, in XenStore's directory order: values and ordered children. Parents
    that the dict leaves out exist with an empty value, as XenStore creates them."""

    def __init__(self, nodes):
        self.values, self.children = {}, {}
        for path, value in nodes.items():
            parts = path.split("/")
            for i in range(1, len(parts) + 1):
                node = "/".join(parts[:i])
                if node not in self.values:
                    self.values[node] = b""
                    self.children.setdefault("/".join(parts[:i - 1]), []).append(parts[i - 1])
            self.values[path] = value

    def below(self, path):
        """Every node strictly below `path`, parents first."""
        out = []
        for c in self.children.get(path, []):
            child = path + "/" + c
            out.append(child)
            out.extend(self.below(child))
        return out


def recode(value):
    """xenopsd's utf8_recode: (text, False), or text with U+FFFD for bad bytes and True."""
    if isinstance(value, str):
        return value, False
    try:
        return value.decode("utf-8"), False
    except UnicodeDecodeError:
        return value.decode("utf-8", "replace"), True


def xenopsd_look(tree):
    """The `guest_agent` list xenopsd hands to xapi: [(path, value)], the reverse of its walk
    (each entry is consed onto the list as it is read); and the paths whose bytes were recoded."""
    walk, recoded = [], []

    def ls_lr(path, excluded, depth):
        if path in excluded:
            return
        if path in tree.values:
            text, bad = recode(tree.values[path])
            walk.append((path, text))
            if bad:
                recoded.append(path)
        if depth >= 0:
            for c in tree.children.get(path, []):
                ls_lr(path + "/" + c, excluded, depth - 1)

    for root, excluded, depth in XENOPSD_ROOTS:
        ls_lr(root, excluded, depth)
    return walk[::-1], recoded


class XapiState:
    """xapi's lookup and list over xenopsd's list (Xapi_xenops.update_vm_internal). `list` matches
    by string prefix and keeps the last occurrence of each name (Listext.setify). Every key a
    lookup finds is noted in `used`."""

    def __init__(self, entries):
        self.entries = entries
        self.used = set()

    def lookup(self, key):
        for path, value in self.entries:
            if path == key:
                self.used.add(key)
                return value
        return None

    def list(self, path):
        path = path[1:] if path.startswith("/") else path
        names = []
        for p, _ in self.entries:
            if p.startswith(path):
                rest = [x for x in p[len(path):].split("/") if x]
                if rest:
                    names.append(rest[0])
        return setify(names)


def setify(names):
    """Listext.setify: each name once, where it last occurs."""
    seen, out = set(), []
    for name in reversed(names):
        if name not in seen:
            seen.add(name)
            out.append(name)
    return out[::-1]


def _concat(a, b):
    """OCaml's Filename.concat."""
    return a + b if not a or a.endswith("/") else a + "/" + b


# -- Xapi_guest_agent ------------------------------------------------------------------------------

PV_DRIVERS_VERSION = (("attr/PVAddons/MajorVersion", "major"), ("attr/PVAddons/MinorVersion", "minor"),
                      ("attr/PVAddons/MicroVersion", "micro"), ("attr/PVAddons/BuildVersion", "build"),
                      ("attr/PVAddons/Application", "application"))
OS_VERSION = (("data/os_name", "name"), ("data/os_uname", "uname"), ("data/os_distro", "distro"),
              ("data/os_majorver", "major"), ("data/os_minorver", "minor"),
              ("attr/os/spmajor", "spmajor"), ("attr/os/spminor", "spminor"))
NETBIOS_NAME = (("data/host_name_dns", "host_name"),)
DNS_DOMAIN = (("data/domain", "dns_domain"),)
MEMORY = (("data/meminfo_free", "free"), ("data/meminfo_total", "total"))
DEVICE_ID = (("data/device_id", "device_id"),)
GUEST_SERVICE_KEYS = ("pvs_target/target_software_version",)   # Xapi_globs.guest_service_keys
IFACE_PREFIXES = ("eth", "xenbr", "eno", "ens", "emp", "enx")


def networks(path, vif_type, list_, dropped=None):
    """Xapi_guest_agent.networks: [(XenStore key, networks key)]. Below <path>/<vif_type>/<id>, a
    family (ipv4, ipv6) with two or more indexes of which one fails int_of_string makes the fold
    start again from nothing: that family and those folded before it are lost (noted in
    `dropped` as (VIF path, family, [families lost with it])). With no VIF listed, the legacy
    layout <path>/eth<N>/ip... is read instead."""
    def find_ipv6(p, prefix):
        return [(_concat(_concat(p, s), "addr"), _concat(prefix, s)) for s in list_(p)]

    def find_all_ips(p, prefix):
        ips = [(_concat(p, "ip"), _concat(prefix, "ip")), (_concat(p, "ip"), _concat(_concat(prefix, "ipv4"), "0"))]
        if "ipv6" in list_(p):
            ips += find_ipv6(_concat(p, "ipv6"), _concat(prefix, "ipv6"))
        return ips

    def find_eths(p):
        acc = []
        for eth in list_(p):
            prefix = next((x for x in IFACE_PREFIXES if eth.startswith(x)), None)
            if prefix is not None:
                acc.insert(0, (_concat(p, eth), eth[len(prefix):]))
        return acc

    def find_all_vif_ips(vif_path, vif_id):
        acc, folded = [], []
        for ip_ver in [a for a in list_(vif_path) if a in ("ipv4", "ipv6")]:
            ids = list_(_concat(vif_path, ip_ver))
            if len(ids) > 1 and any(ocaml_int(i) is None for i in ids):   # List.stable_sort's cmp fails
                if dropped is not None:
                    dropped.append((vif_path, ip_ver, folded))
                acc, folded = [], []
                continue
            pairs = []
            for n in sorted(ids, key=ocaml_int) if len(ids) > 1 else ids:
                left, right = "%s/%s/%s" % (vif_path, ip_ver, n), "%s/%s/%s" % (vif_id, ip_ver, n)
                if not pairs and ip_ver == "ipv4":
                    pairs = [(left, _concat(vif_id, "ip")), (left, right)]
                else:
                    pairs.insert(0, (left, right))
            acc = pairs + acc
            folded = folded + [ip_ver] if pairs else folded
        return acc

    vif_root = _concat(path, vif_type)
    vifs = [(_concat(vif_root, v), v) for v in list_(vif_root)][::-1]
    if not vifs:
        return [ip for p, prefix in find_eths(path) for ip in find_all_ips(p, prefix)]
    return [ip for vif_path, vif_id in vifs for ip in find_all_vif_ips(vif_path, vif_id)]


def guest_services(lookup, list_):
    """Xapi_guest_agent.get_guest_services: data/service/<service>/<key> -> <service>/<key>."""
    return [(service + "/" + key, _or(lookup("data/service/%s/%s" % (service, key)), ""))
            for service in list_("data/service") for key in list_("data/service/" + service)]


def _or(value, default):
    return default if value is None else value


def _windows_driver(line):
    """Scanf "%s@ %s@ %s@ %s@\\n": (lowercased driver name, "vendor version attr")."""
    fields, rest = [], line
    for stop in (" ", " ", " ", "\n"):
        head, _, rest = rest.partition(stop)
        fields.append(head)
    vendor, driver, version, attr = fields
    return driver.lower(), " ".join((vendor, version, attr))


def guest_metrics(lookup, list_, dropped=None):
    """Xapi_guest_agent.get_initial_guest_metrics: the assoc lists xapi stores, and the hot-plug
    tristates."""
    cant_suspend_reason = lookup("data/cant_suspend_reason")

    def to_map(pairs):
        out = []
        for xskey, mapkey in pairs:
            value = lookup(xskey)
            if value is not None and xskey == "control/feature-suspend" and cant_suspend_reason is not None:
                out.append(("data-cant-suspend-reason", cant_suspend_reason))
            elif value is not None:
                out.append((mapkey, value))
        return out

    def tristate(key):
        return {"0": "no", "1": "yes"}.get(lookup(key), "unspecified")

    drivers = to_map([("drivers/" + x, x) for x in list_("drivers") if ocaml_int(x) is not None])
    pv = to_map(PV_DRIVERS_VERSION) + [_windows_driver(v) for _, v in drivers]
    if pv and not any(k == "micro" for k, _ in pv):
        pv.insert(0, ("micro", "-1"))
    domain = to_map(DNS_DOMAIN)
    netbios = to_map(NETBIOS_NAME)
    if domain:
        netbios = [(k, "%s.%s" % (v, domain[0][1])) for k, v in netbios]
    ts = lookup("data/ts")
    services = guest_services(lookup, list_)
    keys = [(key, lookup("data/" + key)) for key in GUEST_SERVICE_KEYS]
    return {
        "pv_drivers_version": pv,
        "os_version": to_map(OS_VERSION),
        "netbios_name": netbios,
        "networks": to_map(networks("attr", "vif", list_, dropped)
                           + networks("xenserver/attr", "net-sriov-vf", list_, dropped)),
        "other": to_map([("control/" + x, x) for x in list_("control")])
        + ([("data-ts", ts)] if ts is not None else []),
        "memory": to_map(MEMORY),
        "device_id": to_map(DEVICE_ID),
        "services": services[::-1] + [(k, v) for k, v in keys[::-1] if v is not None],
        "can_use_hotplug_vbd": tristate("feature/hotplug/vbd"),
        "can_use_hotplug_vif": tristate("feature/hotplug/vif"),
    }


def assoc(pairs, key):
    """OCaml's List.assoc_opt: the first binding."""
    return next((v for k, v in pairs if k == key), None)


def drivers_version(os_version, pv_drivers_version):
    """Xapi_pv_driver_version.get_drivers_version: (os, major, minor, micro, build) with -1 for a
    missing micro or build, or None: "Unknown", no PV drivers (VM_MISSING_PV_DRIVERS)."""
    values = []
    for key, default in (("major", None), ("minor", None), ("micro", -1), ("build", -1)):
        text = assoc(pv_drivers_version, key)
        value = default if text is None else ocaml_int(text)
        if value is None:
            return None
        values.append(value)
    return ("Windows" if assoc(os_version, "distro") == "windows" else "Linux",) + tuple(values)


# -- the view --------------------------------------------------------------------------------------

PRODUCT_VERSION = re.compile(r"([0-9]+)\.([0-9]+)\.([0-9]+)\Z")
NOT_UPGRADABLE = "attr/PVAddons/NotUpgradable"
CONNECTED = "4"   # XenbusStateConnected
# Read by xenopsd and used by nothing in xapi, but by design: no warning.
BENIGN = {"data/updated",            # older xapi's trigger; squeezed: "an agent is present"
          "data/update_cnt",         # an older agents' counter, which xapi ignores by name
          "attr/PVAddons/Installed",  # written by every Linux agent, read by nothing
          NOT_UPGRADABLE}            # warned about on its own


def parse_product_version(text):
    """(x, y, z) from "X.Y.Z", or None."""
    m = PRODUCT_VERSION.match(text or "")
    return tuple(int(g) for g in m.groups()) if m else None


def view(nodes, product_version=None, backends=None):
    """What xapi makes of the guest's tree `nodes` ({path: value} as read, in directory order),
    and one warning for each thing a host would silently drop or misread.

    product_version: (x, y, z), the host's, for the proposal's comparison (None: not given).
    backends: {device path: its backend's state or None}, for PV_drivers_detected (None: unknown).
    """
    tree = Tree(nodes)
    entries, recoded = xenopsd_look(tree)
    state = XapiState(entries)
    dropped = []
    gm = guest_metrics(state.lookup, state.list, dropped)
    warnings = []
    maps = {}
    for field in ("pv_drivers_version", "os_version", "netbios_name", "networks", "other", "memory",
                  "device_id", "services"):
        maps[field] = {}
        for k, v in gm[field]:
            if k in maps[field]:
                warnings.append("%s[%s]: given twice (%r, %r): a client sees only one of them"
                                % (FIELDS.get(field, field), k, maps[field][k], v))
            else:
                maps[field][k] = v
    pv = drivers_version(gm["os_version"], gm["pv_drivers_version"])
    detected = None if backends is None else any(s == CONNECTED for s in backends.values())
    not_upgradable = recode(tree.values[NOT_UPGRADABLE])[0] if NOT_UPGRADABLE in tree.values else None
    out = {
        "PV_drivers_version": maps["pv_drivers_version"],
        "PV_drivers": None if pv is None else dict(zip(("os", "major", "minor", "micro", "build"), pv)),
        "PV_drivers_detected": detected,
        "PV_drivers_up_to_date": {"proposal": _proposal(not_upgradable, pv, product_version),
                                  "xapi": _today(detected, backends)},
        "os_version": maps["os_version"],
        "netbios_name": maps["netbios_name"],
        "networks": maps["networks"],
        "other": maps["other"],
        "memory": maps["memory"],
        "device_id": maps["device_id"],
        "services": maps["services"],
        "can_use_hotplug_vbd": gm["can_use_hotplug_vbd"],
        "can_use_hotplug_vif": gm["can_use_hotplug_vif"],
    }
    warnings = (_version_warnings(tree, gm, pv, not_upgradable)
                + ["%s: not valid UTF-8: xenopsd replaces the bad bytes with U+FFFD" % p
                   for p in dict.fromkeys(recoded)]
                + _network_warnings(state, dropped)
                + _value_warnings(state, gm)
                + warnings
                + _unread(tree, entries)
                + _unused(tree, state))
    out["warnings"] = warnings
    return out


FIELDS = {"pv_drivers_version": "PV_drivers_version"}   # xapi's field names, where ours differ


def _proposal(not_upgradable, pv, product):
    """PV_drivers_up_to_date as the 2010 proposal's host computes it: {"value", "why"}."""
    if not_upgradable == "1":
        return {"value": True, "why": "attr/PVAddons/NotUpgradable = 1"}
    if pv is None:
        return {"value": False, "why": "no PV drivers"}
    if product is None:
        return {"value": None, "why": "needs --product-version (the host's X.Y.Z)"}
    version = pv[1:4]
    if version[2] == -1:
        return {"value": False, "why": "no MicroVersion: out of date"}
    ok = version >= product
    return {"value": ok, "why": "%d.%d.%d %s %d.%d.%d" % (version + (">=" if ok else "<",) + product)}


def _today(detected, backends):
    """PV_drivers_up_to_date as xapi sets it today: PV_drivers_detected."""
    if detected is None:
        return {"value": None, "why": "set from PV_drivers_detected, not known here"}
    if detected:
        return {"value": True, "why": "set from PV_drivers_detected: a device's backend is connected"}
    return {"value": False, "why": "set from PV_drivers_detected: %s" % (
        "no device's backend is connected" if backends else "the guest has no PV device")}


def _version_warnings(tree, gm, pv, not_upgradable):
    out = []
    if not_upgradable == "1":
        out.append("attr/PVAddons/NotUpgradable = 1: read by no released xapi (today PV_drivers_up_to_date "
                   "= PV_drivers_detected); only a host that implements the 2010 proposal honours it")
    elif not_upgradable is not None:
        out.append("attr/PVAddons/NotUpgradable = %r: the proposal honours only \"1\" (and no released xapi "
                   "reads it)" % not_upgradable)
    pairs = gm["pv_drivers_version"]
    missing = [k for k, name in PV_DRIVERS_VERSION[:2] if assoc(pairs, name) is None]
    if missing:
        out.append("%s %s missing: xapi sees no PV drivers (VM_MISSING_PV_DRIVERS)"
                   % (" and ".join(missing), "is" if len(missing) == 1 else "are"))
    for key, name in PV_DRIVERS_VERSION[:4]:
        text = assoc(pairs, name)
        if text is None or (name == "micro" and key not in tree.values):
            continue
        if ocaml_int(text) is None:
            out.append("%s = %r: not an integer as xapi parses it (OCaml int_of_string): xapi sees no PV "
                       "drivers (VM_MISSING_PV_DRIVERS)" % (key, text))
        elif not canonical(text):
            out.append("%s = %r: xapi reads %d but stores and shows %r" % (key, text, ocaml_int(text), text))
    if pv is not None and "attr/PVAddons/MicroVersion" not in tree.values and assoc(pairs, "micro") == "-1":
        out.append("attr/PVAddons/MicroVersion is missing: xapi stores micro = -1, and the proposal's host "
                   "counts the tools out of date")
    if pv is not None and pv[0] == "Windows":
        out.append("data/os_distro = 'windows': xapi applies its Windows rules to this guest")
    if "data/updated" not in tree.values:
        out.append("data/updated is missing: the proposal's host reads attr/PVAddons only when it is written, "
                   "and squeezed sees no guest agent")
    return out


def _network_warnings(state, dropped):
    out = ["%s/%s: an index is not an integer (OCaml int_of_string, which xapi sorts them with): xapi drops "
           "the VIF's %s addresses%s" % (vif, family, " and ".join([family] + lost),
                                          ", read before" if lost else "")
           for vif, family, lost in dropped]
    for root, vif_type in (("attr", "vif"), ("xenserver/attr", "net-sriov-vf")):
        base = root + "/" + vif_type
        vifs = state.list(base)
        for vif in vifs:
            if not re.match(r"(0|[1-9][0-9]*)\Z", vif):
                out.append("%s/%s: not a device number: networks[%s/...] match no VIF" % (base, vif, vif))
            for family in state.list(base + "/" + vif):
                if family not in ("ipv4", "ipv6"):
                    continue
                ids = state.list("%s/%s/%s" % (base, vif, family))
                if len(ids) == 1 and ocaml_int(ids[0]) is None:
                    out.append("%s/%s/%s/%s: the index is not an integer: xapi keeps it only while it is the "
                               "family's one address" % (base, vif, family, ids[0]))
        if not vifs:
            for eth in state.list(root):
                prefix = next((x for x in IFACE_PREFIXES if eth.startswith(x)), None)
                if prefix is not None:
                    out.append("%s/%s: the legacy layout: xapi takes %r, from the interface's name, as the "
                               "VIF's device number" % (root, eth, eth[len(prefix):]))
    return out


def _value_warnings(state, gm):
    out = []
    lookup = dict(state.entries[::-1]).get   # the first binding wins, as in assoc
    free = lookup("data/meminfo_free")
    if free is not None and ocaml_int(free, 64) is None:
        out.append("data/meminfo_free = %r: not an integer as xcp-rrdd parses it (Int64.of_string): "
                   "memory_internal_free is not updated" % free)
    for key in ("feature/hotplug/vbd", "feature/hotplug/vif"):
        value = lookup(key)
        if value is not None and value not in ("0", "1"):
            out.append("%s = %r: xapi reads only 0 or 1: can_use_hotplug_%s is unspecified" % (key, value, key[-3:]))
    # Looked up whatever comes of them, so `used` cannot tell: what xapi then throws away.
    if lookup("data/cant_suspend_reason") is not None and lookup("control/feature-suspend") is None:
        out.append("data/cant_suspend_reason: used only with control/feature-suspend")
    host, domain = lookup("data/host_name_dns"), lookup("data/domain")
    if domain is not None and host is None:
        out.append("data/domain: used only with data/host_name_dns")
    if domain is not None and host is not None:
        shown = assoc(gm["netbios_name"], "host_name")
        if domain == "":
            out.append("data/domain is empty: xapi shows host_name %r" % shown)
        elif host == domain or host.endswith("." + domain):
            out.append("data/host_name_dns = %r already holds data/domain: xapi shows host_name %r" % (host, shown))
    return out


def _unread(tree, entries):
    """One warning per subtree the guest holds that xenopsd never reads: at the first node on
    each path that its look does not reach."""
    read = {p for p, _ in entries}
    out = []
    for top in ("attr", "data", "control", "drivers", "feature", "xenserver/attr"):
        for path in tree.below(top):
            parent = path.rsplit("/", 1)[0]
            if path in read or (parent not in read and parent != "feature"):
                continue   # read, or inside a subtree already reported
            count = len(tree.below(path)) + 1
            why = "xenopsd skips attr/os/hotfixes" if path == "attr/os/hotfixes" else \
                "xenopsd reads " + REACH[top.split("/")[0]]
            out.append("%s: never read%s: %s" % (path, " (%d keys)" % count if count > 1 else "", why))
    return out


def _unused(tree, state):
    """Keys xenopsd reads that nothing in xapi uses; leaves with a value only (a directory, or an
    empty key, carries nothing to lose)."""
    out, seen = [], set()
    vif_mode = {"attr": bool(state.list("attr/vif")),
                "xenserver/attr": bool(state.list("xenserver/attr/net-sriov-vf"))}
    for path, value in state.entries[::-1]:
        if path in seen or path in state.used or path in BENIGN or tree.children.get(path) or value == "":
            continue
        seen.add(path)
        root = "xenserver/attr" if path.startswith("xenserver/attr/") else path.split("/")[0]
        rel = path[len(root) + 1:].split("/")
        if root in vif_mode and rel[0] in ("vif", "net-sriov-vf") and len(rel) >= 3:
            why = "xapi reads only ipv4/<n> and ipv6/<n> below a VIF"
        elif root in vif_mode and vif_mode[root] and rel[0].startswith(IFACE_PREFIXES):
            why = "the legacy layout, ignored while %s has entries" % (
                "attr/vif" if root == "attr" else "xenserver/attr/net-sriov-vf")
        elif root == "drivers":
            why = "xapi reads only drivers/<integer>"
        elif path.startswith("data/service/"):
            why = "xapi reads data/service/<service>/<key>"
        else:
            why = "read by xenopsd, used by nothing in xapi"
        out.append("%s: %s" % (path, why))
    return out


# -- the text form ---------------------------------------------------------------------------------

MAPS = ("PV_drivers_version", "os_version", "netbios_name", "networks", "other", "memory", "device_id", "services")


def natural(key):
    """Sort key that puts 0/ipv4/2 before 0/ipv4/10."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"([0-9]+)", key) if p]


def sorted_view(v):
    """The view with each map's keys in natural order (for printing)."""
    return dict(v, **{m: {k: v[m][k] for k in sorted(v[m], key=natural)} for m in MAPS})


BOOL = {True: "true", False: "false", None: "unknown"}


def _answer(a):
    return "%s (%s)" % (BOOL[a["value"]], a["why"])


def text_lines(v):
    """The view as `status --host` prints it: one line per entry, then one per warning."""
    v = sorted_view(v)
    out = []
    for m in MAPS:
        if m == "os_version":
            pv = v["PV_drivers"]
            out.append("PV_drivers = %s" % ("%s %d.%d.%d, build %d" % tuple(pv[k] for k in (
                "os", "major", "minor", "micro", "build")) if pv else "none: xapi refuses what needs them "
                "(VM_MISSING_PV_DRIVERS)"))
            out.append("PV_drivers_detected = " + BOOL[v["PV_drivers_detected"]])
            out.append("PV_drivers_up_to_date (the proposal) = " + _answer(v["PV_drivers_up_to_date"]["proposal"]))
            out.append("PV_drivers_up_to_date (xapi today) = " + _answer(v["PV_drivers_up_to_date"]["xapi"]))
        out += ["%s[%s] = %s" % (m, k, value) for k, value in v[m].items()] or ["%s = (empty)" % m]
    out.append("can_use_hotplug_vbd = " + v["can_use_hotplug_vbd"])
    out.append("can_use_hotplug_vif = " + v["can_use_hotplug_vif"])
    return out + ["warning: " + w for w in v["warnings"]]

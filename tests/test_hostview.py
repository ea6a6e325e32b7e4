"""`status --host`: what xapi makes of the guest's tree (xe_guest_agent/hostview.py).

The pure functions are held to xapi's own golden cases, transcribed with the harness that feeds
them (xapi-project/xen-api ocaml/tests/test_guest_agent.ml: `Networks`, `Initial_guest_metrics`,
`Services`), to OCaml's int_of_string (runtime/ints.c) and, independently, to tests/hostmodel.py.
The command itself runs as guest 7 through the device path, on trees the real agent published
and trees dom0 wrote, and is judged by the host model reading dom0's side."""
import json
import random
import time

import pytest

from tests import hostmodel, test_hostmodel
from tests.conftest import cli
from tests.lab.quickread import WRITE, QuickReader
from tests.test_metrics import Net
from xe_guest_agent import hostview

# -- xapi's golden cases, through a transcription of its test harness -----------------------------


def golden_list(paths):
    """Networks.list of test_guest_agent.ml: a tree built by add_path_to_tree (a child seen again
    moves to the front, a new one is consed in front), listed by list_helper."""
    root = []

    def add(children, parts):
        if not parts:
            return children
        for name, below in children:
            if name == parts[0]:
                return [(name, add(below, parts[1:]))] + [c for c in children if c[0] != parts[0]]
        return [(parts[0], add([], parts[1:]))] + children

    for p in paths:
        root = add(root, [x for x in p.split("/") if x])

    def list_(path):
        children = root
        for node in [x for x in path.split("/") if x]:
            children = next((below for name, below in children if name == node), None)
            if children is None:
                return []
        return [name for name, _ in children]
    return list_


def golden_mtree(pairs):
    """Initial_guest_metrics' mtree: leaves hold values, inner nodes none; (lookup, list)."""
    root = ("", [])   # inner node: (name, children); leaf: (name, value)

    def add(node, parts, value):
        name, children = node
        if not parts:
            assert children == [], "Can't add a leaf on a tree node"
            return (name, value)
        for child in children:
            if child[0] == parts[0]:
                assert isinstance(child[1], list), "Can't overwrite an existing leaf"
                return (name, [add(child, parts[1:], value)] + [c for c in children if c[0] != parts[0]])
        return (name, [add((parts[0], []), parts[1:], value)] + children)

    for path, value in pairs:
        root = add(root, [x for x in path.split("/") if x], value)

    def list_(path):
        node = root
        for part in [x for x in path.split("/") if x]:
            if not isinstance(node[1], list):
                return []
            node = next((c for c in node[1] if c[0] == part), None)
            if node is None:
                return []
        return [c[0] for c in node[1]] if isinstance(node[1], list) else []

    def lookup(path):
        node = root
        for part in [x for x in path.split("/") if x]:
            if not isinstance(node[1], list):
                return node[1]   # lookup_helper goes on past a leaf and returns its value
            node = next((c for c in node[1] if c[0] == part), None)
            if node is None:
                return None
        return None if isinstance(node[1], list) else node[1]
    return lookup, list_


# xapi's cases, transcribed once in tests/test_hostmodel.py (which holds the host model to them):
# Networks: input paths -> [(XenStore key, networks key)], in xapi's order.
NETWORKS = test_hostmodel.NETWORKS


@pytest.mark.parametrize("paths, expected", NETWORKS, ids=[" ".join(p) for p, _ in NETWORKS])
def test_networks_golden(paths, expected):
    list_ = golden_list(paths)
    assert (hostview.networks("attr", "vif", list_)
            + hostview.networks("xenserver/attr", "net-sriov-vf", list_)) == expected


# Initial_guest_metrics: [(path, value)] -> networks @ pv_drivers_version, in xapi's order (the
# dicts of test_hostmodel.INITIAL keep it), and the cases that table leaves out.
INITIAL = [(list(tree.items()), list(expected.items())) for tree, expected in test_hostmodel.INITIAL] + [
    # windows pv driver versions parsing
    ([("drivers/0", "XenServer XENBUS 9.1.9.105 "), ("drivers/1", "XenServer XENVBD 9.1.8.79 "),
      ("drivers/2", "XenServer XENVIF 9.1.12.101 "), ("drivers/3", "XenServer XENIFACE 9.1.10.87 "),
      ("drivers/4", "XenServer XENNET 9.1.7.65 ")],
     [("micro", "-1"), ("xennet", "XenServer 9.1.7.65 "), ("xeniface", "XenServer 9.1.10.87 "),
      ("xenvif", "XenServer 9.1.12.101 "), ("xenvbd", "XenServer 9.1.8.79 "), ("xenbus", "XenServer 9.1.9.105 ")]),
    ([("drivers/0", "XenServer XENBUS 9.1.9.105 (DEBUG) (MOREDEBUG)"), ("drivers/2", "XCP_ng XENVIF 9.1.12.101 ")],
     [("micro", "-1"), ("xenvif", "XCP_ng 9.1.12.101 "), ("xenbus", "XenServer 9.1.9.105 (DEBUG) (MOREDEBUG)")]),
]


@pytest.mark.parametrize("pairs, expected", INITIAL, ids=[" ".join(p for p, _ in t) for t, _ in INITIAL])
def test_initial_guest_metrics_golden(pairs, expected):
    gm = hostview.guest_metrics(*golden_mtree(pairs))
    assert gm["networks"] + gm["pv_drivers_version"] == expected


# Services: the guest_agent list -> services, with xapi_xenops' own lookup and list (XapiState).
SERVICES = [
    ([("data/key1", "v1"), ("data/key2", "v2")], []),                              # no data/service
    ([("data/service/key1", "v1"), ("data/service/key2", "v2")], []),              # less than two deep
    ([("data/service/service-a/sub/key1", "sab-v1"), ("data/service/service-a/sub/key2", "sab-v2")],
     [("service-a/sub", "")]),                                                      # beyond two deep
    ([("data/service", ""), ("data/service/service-a", ""), ("data/service/service-b", ""),
      ("data/service/service-a/key1", "sa-v1"), ("data/service/service-a/key2", "sa-v2"),
      ("data/service/service-b/key1", "sb-v1"), ("data/service/service-b/key2", "sb-v2")],
     [("service-a/key1", "sa-v1"), ("service-a/key2", "sa-v2"), ("service-b/key1", "sb-v1"),
      ("service-b/key2", "sb-v2")]),                                                # normal case
]


@pytest.mark.parametrize("entries, expected", SERVICES, ids=["none", "shallow", "deep", "normal"])
def test_guest_services_golden(entries, expected):
    state = hostview.XapiState(entries)
    assert hostview.guest_services(state.lookup, state.list) == expected


def test_list_keeps_each_name_where_it_last_occurs():
    # xapi_xenops' list ends with Listext.setify (ocaml/libs/xapi-stdext/lib/xapi-stdext-std/listext.ml):
    # a name is dropped when it occurs again later, so the order is that of last occurrences.
    assert hostview.setify(["a", "b", "a", "c", "b"]) == ["a", "c", "b"]
    state = hostview.XapiState([("data/service/a/k", "1"), ("data/service/b/k", "2"), ("data/service/a/j", "3")])
    assert hostview.guest_services(state.lookup, state.list) == [("b/k", "2"), ("a/k", "1"), ("a/j", "3")]


# -- OCaml's int_of_string (runtime/ints.c parse_intnat) ------------------------------------------

MAX = (1 << 62) - 1
OCAML = [
    ("0", 0), ("42", 42), ("+1", 1), ("-1", -1), ("007", 7), ("1_000", 1000), ("1_", 1), ("1__2", 12),
    ("0x10", 16), ("0XfF", 255), ("0o17", 15), ("0b101", 5), ("0u12", 12), ("-0x10", -16), ("+0b1", 1),
    (str(MAX), MAX), ("-" + str(MAX + 1), -MAX - 1),
    (str(MAX + 1), None), ("-" + str(MAX + 2), None),                   # decimal: the signed range only
    ("0x3fffffffffffffff", MAX), ("0x4000000000000000", -MAX - 1),     # prefixed: 63 bits, wrapping
    ("0x7fffffffffffffff", -1), ("0x8000000000000000", None), ("-0x4000000000000000", -MAX - 1),
    ("0u4611686018427387904", -MAX - 1),
    ("", None), ("-", None), ("+", None), ("0x", None), ("0u", None), ("_1", None), ("0x_1", None),
    (" 1", None), ("1 ", None), ("1\n", None), ("1.0", None), ("1e3", None), ("--1", None), ("+-1", None),
    ("0b2", None), ("0o8", None), ("0xg", None), ("\u0661", None), ("1\x00", None), ("12a", None),
    ("0x1" + "0" * 16, None),                                          # beyond 64 bits
]


@pytest.mark.parametrize("text, value", OCAML, ids=[repr(t) for t, _ in OCAML])
def test_ocaml_int_of_string(text, value):
    assert hostview.ocaml_int(text) == value


def test_ocaml_int64_of_string_is_the_same_rule_on_64_bits():
    assert hostview.ocaml_int(str((1 << 63) - 1), 64) == (1 << 63) - 1
    assert hostview.ocaml_int(str(1 << 63), 64) is None
    assert hostview.ocaml_int("0xffffffffffffffff", 64) == -1
    assert hostview.ocaml_int("1024000", 64) == 1024000 and hostview.ocaml_int("1 kB", 64) is None


def test_ocaml_int_agrees_with_the_host_model_on_a_corpus():
    """Two implementations written apart (a transliteration of the C, hostmodel's regex) must agree."""
    rng = random.Random(9)
    alphabet = "0123456789abcdefxXoObBuU_+- \n."
    corpus = [text for text, _ in OCAML]
    corpus += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6))) for _ in range(20000)]
    corpus += [prefix + "".join(rng.choice("0123456789abcdef") for _ in range(rng.randint(15, 21)))
               for prefix in ("", "-", "0x", "-0x", "0o", "0b", "0u") for _ in range(300)]
    differ = [t for t in corpus if hostview.ocaml_int(t) != hostmodel._int(t)]
    assert not differ, differ[:20]


# -- xenopsd's look --------------------------------------------------------------------------------

def test_xenopsd_look_depths_exclusions_and_order():
    nodes = {"control/feature-balloon": "1", "control/deep/er": "x",
             "attr/vif/0/ipv4/0": "10.0.0.1", "attr/vif/0/ipv4/0/prefix": "24", "attr/os/hotfixes/0": "h",
             "feature/hotplug/vif": "1", "feature/other": "1",
             "data/os_name": "Debian", "data/volumes/0/name": "/dev/xvda",
             "data/service/s/k": "v", "data/service/s/k/deeper": "no", "vm-data/x": "y"}
    entries, _ = hostview.xenopsd_look(hostview.Tree(nodes))
    walk = ["control", "control/feature-balloon", "control/deep",
            "feature/hotplug", "feature/hotplug/vif",
            "attr", "attr/vif", "attr/vif/0", "attr/vif/0/ipv4", "attr/vif/0/ipv4/0", "attr/os",
            "data", "data/os_name", "data/volumes", "data/service",
            "data/service", "data/service/s", "data/service/s/k"]
    assert [p for p, _ in entries] == walk[::-1]   # consed as read: the reverse of the walk
    assert dict(entries)["attr/vif/0/ipv4/0"] == "10.0.0.1" and dict(entries)["attr/vif"] == ""


def test_values_are_recoded_as_utf8_as_xenopsd_does():
    v = hostview.view({"data/os_name": b"Debian \xff", "data/os_uname": "6.1".encode(), "data/updated": b"1"})
    assert v["os_version"] == {"name": "Debian \ufffd", "uname": "6.1"}
    assert any(w.startswith("data/os_name: not valid UTF-8") for w in v["warnings"])


# -- xapi's rules beyond its goldens, on whole trees -----------------------------------------------

AGENT = {"data/os_name": "Debian GNU/Linux 12 (bookworm)", "data/os_distro": "debian", "data/os_majorver": "12",
         "data/os_uname": "6.1.0", "data/meminfo_total": "2048000", "data/meminfo_free": "1024000",
         "attr/PVAddons/MajorVersion": "1", "attr/PVAddons/MinorVersion": "0", "attr/PVAddons/MicroVersion": "0",
         "attr/PVAddons/BuildVersion": "0", "attr/PVAddons/Installed": "1",
         "attr/vif/0/ipv4/0": "10.0.0.1", "attr/vif/0/ipv6/0": "2001:db8::1",
         "control/feature-balloon": "1", "data/updated": "1"}


def tree(**changes):
    """The agent's tree with keys changed (a value) or removed (None); '__' stands for '/'."""
    out = dict(AGENT)
    for key, value in changes.items():
        key = key.replace("__", "/")
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def test_a_clean_agent_tree_is_read_whole_with_no_warning():
    v = hostview.view(tree(), (1, 0, 0), {})
    assert v["warnings"] == []
    assert v["PV_drivers_version"] == {"major": "1", "minor": "0", "micro": "0", "build": "0"}
    assert v["PV_drivers"] == {"os": "Linux", "major": 1, "minor": 0, "micro": 0, "build": 0}
    assert v["os_version"] == {"name": "Debian GNU/Linux 12 (bookworm)", "distro": "debian", "major": "12",
                               "uname": "6.1.0"}
    assert v["networks"] == {"0/ip": "10.0.0.1", "0/ipv4/0": "10.0.0.1", "0/ipv6/0": "2001:db8::1"}
    assert v["other"] == {"feature-balloon": "1"} and v["memory"] == {"free": "1024000", "total": "2048000"}
    assert v["can_use_hotplug_vif"] == v["can_use_hotplug_vbd"] == "unspecified"


@pytest.mark.parametrize("changes, pv, warning", [
    ({"attr__PVAddons__MinorVersion": "1.2"}, None, "attr/PVAddons/MinorVersion = '1.2': not an integer"),
    ({"attr__PVAddons__BuildVersion": "proto-0.5.0-dev"}, None, "BuildVersion = 'proto-0.5.0-dev': not an integer"),
    ({"attr__PVAddons__MajorVersion": "1 "}, None, "MajorVersion = '1 ': not an integer"),
    ({"attr__PVAddons__MajorVersion": str(1 << 62)}, None, "not an integer as xapi parses it"),
    ({"attr__PVAddons__MajorVersion": None}, None, "attr/PVAddons/MajorVersion is missing"),
    ({"attr__PVAddons__MajorVersion": None, "attr__PVAddons__MinorVersion": None}, None,
     "MajorVersion and attr/PVAddons/MinorVersion are missing"),
    ({"attr__PVAddons__MicroVersion": "0x10"}, ("Linux", 1, 0, 16, 0), "xapi reads 16 but stores and shows '0x10'"),
    ({"attr__PVAddons__MicroVersion": None}, ("Linux", 1, 0, -1, 0), "MicroVersion is missing: xapi stores micro = -1"),
    ({"data__os_distro": "windows"}, ("Windows", 1, 0, 0, 0), "xapi applies its Windows rules"),
])
def test_pv_drivers_as_xapi_parses_them(changes, pv, warning):
    v = hostview.view(tree(**changes))
    assert v["PV_drivers"] == (None if pv is None else dict(zip(("os", "major", "minor", "micro", "build"), pv)))
    assert [w for w in v["warnings"] if warning in w], v["warnings"]


def test_micro_defaults_to_minus_one_in_the_map_as_xapi_stores_it():
    v = hostview.view(tree(attr__PVAddons__MicroVersion=None, attr__PVAddons__BuildVersion=None))
    assert v["PV_drivers_version"] == {"major": "1", "minor": "0", "micro": "-1"}


@pytest.mark.parametrize("changes, product, backends, proposal, today", [
    # NotUpgradable forces the proposal's answer, whatever the versions; xapi today never reads it
    ({"attr__PVAddons__NotUpgradable": "1"}, (9, 9, 9), {}, True, False),
    ({"attr__PVAddons__NotUpgradable": "1", "attr__PVAddons__MajorVersion": "x"}, None, None, True, None),
    ({"attr__PVAddons__NotUpgradable": "true"}, (9, 9, 9), {}, False, False),   # only "1"
    ({}, (1, 0, 0), {}, True, False),
    ({}, (1, 0, 1), {}, False, False),
    ({}, (0, 9, 9), {"device/vif/0": "4"}, True, True),
    ({}, None, {"device/vif/0": "1", "device/vbd/768": "4"}, None, True),   # any connected backend
    ({}, (1, 0, 0), {"device/vif/0": "3", "device/vbd/768": None}, True, False),
    ({"attr__PVAddons__MicroVersion": None}, (1, 0, 0), None, False, None),    # no micro: out of date
    ({"attr__PVAddons__MajorVersion": None}, (1, 0, 0), None, False, None),    # no PV drivers
])
def test_up_to_date_by_the_proposal_and_by_xapi_today(changes, product, backends, proposal, today):
    answers = hostview.view(tree(**changes), product, backends)["PV_drivers_up_to_date"]
    assert (answers["proposal"]["value"], answers["xapi"]["value"]) == (proposal, today), answers


def test_not_upgradable_is_flagged_as_read_by_no_released_xapi():
    warnings = hostview.view(tree(attr__PVAddons__NotUpgradable="1"))["warnings"]
    assert warnings == ["attr/PVAddons/NotUpgradable = 1: read by no released xapi (today PV_drivers_up_to_date "
                        "= PV_drivers_detected); only a host that implements the 2010 proposal honours it"]


def test_a_bad_index_drops_its_family_and_the_families_folded_before_it():
    # xenstored lists ipv4 before ipv6 (creation order); xenopsd's list reverses it, so xapi folds
    # ipv6 first: a bad ipv6 index loses ipv6 only, a bad ipv4 index loses both.
    base = tree(**{"attr__vif__0__ipv4__1": "10.0.0.2", "attr__vif__0__ipv6__1": "2001:db8::2"})
    bad6 = dict(base, **{"attr/vif/0/ipv6/x": "2001:db8::3"})
    v = hostview.view(bad6)
    assert v["networks"] == {"0/ip": "10.0.0.1", "0/ipv4/0": "10.0.0.1", "0/ipv4/1": "10.0.0.2"}
    assert "attr/vif/0/ipv6: an index is not an integer (OCaml int_of_string, which xapi sorts them with): xapi " \
           "drops the VIF's ipv6 addresses" in v["warnings"]
    bad4 = dict(base, **{"attr/vif/0/ipv4/x": "10.0.0.3"})
    v = hostview.view(bad4)
    assert v["networks"] == {}
    assert [w for w in v["warnings"]
            if w.startswith("attr/vif/0/ipv4:") and "ipv4 and ipv6 addresses, read before" in w], v["warnings"]


def test_a_lone_bad_index_is_kept_and_said_to_be_fragile():
    v = hostview.view(tree(**{"attr__vif__0__ipv6__0": None, "attr__vif__1__ipv6__a": "2001:db8::9"}))
    assert v["networks"]["1/ipv6/a"] == "2001:db8::9"
    assert [w for w in v["warnings"] if w.startswith("attr/vif/1/ipv6/a: the index is not an integer")]


def test_lowest_ipv4_index_is_the_ip_numerically():
    v = hostview.view(tree(**{"attr__vif__0__ipv4__0": None, "attr__vif__0__ipv4__10": "10.0.0.10",
                              "attr__vif__0__ipv4__9": "10.0.0.9"}))
    assert v["networks"]["0/ip"] == "10.0.0.9"


@pytest.mark.parametrize("changes, warning", [
    ({"attr__vif__eth0__ipv4__0": "10.9.0.1"}, "attr/vif/eth0: not a device number: networks[eth0/...] match no VIF"),
    ({"attr__vif__0__ipv4__0__prefix": "24"}, "attr/vif/0/ipv4/0/prefix: never read: xenopsd reads attr/ four levels"),
    ({"attr__vif__0__mac": "00:16:3e:00:00:01"}, "attr/vif/0/mac: xapi reads only ipv4/<n> and ipv6/<n> below"),
    ({"attr__vif__0__name__x": "eth0"}, "attr/vif/0/name/x: xapi reads only ipv4/<n> and ipv6/<n> below a VIF"),
    ({"attr__eth0__ip": "10.0.0.1"}, "attr/eth0/ip: the legacy layout, ignored while attr/vif has entries"),
    ({"data__volumes__0__name": "/dev/xvda", "data__volumes__0__size": "1"},
     "data/volumes/0: never read (3 keys): xenopsd reads data/ one level deep"),
    ({"control__a__b": "1"}, "control/a/b: never read: xenopsd reads control/ one level deep"),
    ({"feature__hotplug-vif": "1"}, "feature/hotplug-vif: never read: xenopsd reads only feature/hotplug/<key>"),
    ({"feature__hotplug__vif": "yes"}, "feature/hotplug/vif = 'yes': xapi reads only 0 or 1"),
    ({"attr__os__hotfixes__0": "KB1"}, "attr/os/hotfixes: never read (2 keys): xenopsd skips attr/os/hotfixes"),
    ({"data__os_version": "12"}, "data/os_version: read by xenopsd, used by nothing in xapi"),
    ({"attr__PVAddons__Vendor": "x"}, "attr/PVAddons/Vendor: read by xenopsd, used by nothing in xapi"),
    ({"data__meminfo_free": "1024000 kB"}, "data/meminfo_free = '1024000 kB': not an integer as xcp-rrdd parses it"),
    ({"data__domain": "example.com"}, "data/domain: used only with data/host_name_dns"),
    ({"data__host_name_dns": "web1.example.com", "data__domain": "example.com"},
     "data/host_name_dns = 'web1.example.com' already holds data/domain: xapi shows host_name "
     "'web1.example.com.example.com'"),
    ({"data__host_name_dns": "web1", "data__domain": ""}, "data/domain is empty: xapi shows host_name 'web1.'"),
    ({"data__cant_suspend_reason": "busy"}, "data/cant_suspend_reason: used only with control/feature-suspend"),
    ({"drivers__x": "XenServer XENBUS 9.1 "}, "drivers/x: xapi reads only drivers/<integer>"),
    ({"data__updated": None}, "data/updated is missing"),
    ({"xenserver__attr__net-sriov-vf__0__ipv4__0": "10.0.0.7"},
     "networks[0/ip]: given twice ('10.0.0.1', '10.0.0.7'): a client sees only one of them"),
])
def test_each_drop_or_misread_has_its_warning(changes, warning):
    v = hostview.view(tree(**changes))
    assert [w for w in v["warnings"] if w.startswith(warning)], v["warnings"]


def test_netbios_name_host_and_domain():
    v = hostview.view(tree(data__host_name_dns="web1", data__domain="example.com"))
    assert v["netbios_name"] == {"host_name": "web1.example.com"} and v["warnings"] == []
    assert hostview.view(tree(data__host_name_dns="web1"))["netbios_name"] == {"host_name": "web1"}


def test_hotplug_tristates_and_the_other_map():
    v = hostview.view(tree(feature__hotplug__vif="1", feature__hotplug__vbd="0",
                           **{"control__feature-suspend": "1", "data__cant_suspend_reason": "busy", "data__ts": "0"}))
    assert (v["can_use_hotplug_vif"], v["can_use_hotplug_vbd"]) == ("yes", "no")
    # control/feature-suspend gives way to the reason the guest cannot suspend; data/ts rides along
    assert v["other"] == {"feature-balloon": "1", "data-cant-suspend-reason": "busy", "data-ts": "0"}


def test_text_lines_one_per_entry_then_the_warnings():
    lines = hostview.text_lines(hostview.view(tree(attr__PVAddons__NotUpgradable="1", attr__vif__0__ipv4__10="x"),
                                              (1, 0, 0), {}))
    assert lines[:5] == ["PV_drivers_version[build] = 0", "PV_drivers_version[major] = 1",
                         "PV_drivers_version[micro] = 0", "PV_drivers_version[minor] = 0",
                         "PV_drivers = Linux 1.0.0, build 0"]
    assert "PV_drivers_up_to_date (the proposal) = true (attr/PVAddons/NotUpgradable = 1)" in lines
    assert "PV_drivers_up_to_date (xapi today) = false (set from PV_drivers_detected: the guest has no PV " \
           "device)" in lines
    i = lines.index("networks[0/ip] = 10.0.0.1")
    assert lines[i:i + 4] == ["networks[0/ip] = 10.0.0.1", "networks[0/ipv4/0] = 10.0.0.1",
                              "networks[0/ipv4/10] = x", "networks[0/ipv6/0] = 2001:db8::1"]
    assert "netbios_name = (empty)" in lines and lines[-1].startswith("warning: attr/PVAddons/NotUpgradable = 1")


# -- the command, as guest 7 through the device, judged from dom0's side -------------------------

def host_status(guest, *extra):
    r = cli("status", "--host", "--xenstore", guest.device, *extra)
    assert r.returncode == 0 and not r.stderr, r
    return r


def test_status_host_on_what_the_real_agent_published(guest, legacy, current, run_agent, flag, net):
    net.vif("eth0", devid=3)
    net.ip("addr", "add", "10.3.0.1/24", "dev", "eth0")
    net.ip("-6", "addr", "add", "2001:db8::3/64", "dev", "eth0", "nodad")
    flag.write_text("")
    agent = run_agent(guest.device, prefix=net.prefix)
    legacy.wait_for(lambda v: v["up_to_date"], timeout=5, what="the proposal's up to date")
    current.wait_for(lambda v: v["networks"].get("3/ipv6/0") and v["os_version"], timeout=5, what="the addresses")
    assert agent.stop()[0] == 0   # the keys stay; the device now serves `status` alone
    host = current.view
    v = json.loads(host_status(guest, "--json", "--product-version", "1.0.0").stdout)
    assert {k: hostview.ocaml_int(x) for k, x in v["PV_drivers_version"].items()} == host["pv_drivers_version"]
    assert v["os_version"] == host["os_version"] and v["networks"] == host["networks"]
    assert v["other"] == host["other"] and v["memory"] == host["memory"]
    assert v["netbios_name"] == host["netbios_name"] and v["netbios_name"]["host_name"]
    assert (v["can_use_hotplug_vif"], v["can_use_hotplug_vbd"]) == (host["can_use_hotplug_vif"],
                                                                    host["can_use_hotplug_vbd"])
    assert v["networks"]["3/ip"] == "10.3.0.1"
    assert v["PV_drivers_up_to_date"]["proposal"]["value"] is legacy.view["up_to_date"] is True
    assert v["PV_drivers_up_to_date"]["xapi"]["value"] is False and v["PV_drivers_detected"] is False
    assert v["warnings"] == ["attr/PVAddons/NotUpgradable = 1: read by no released xapi (today PV_drivers_up_to_date"
                             " = PV_drivers_detected); only a host that implements the 2010 proposal honours it"]
    # dom0 plugs a VIF whose backend connects: xapi today calls the drivers up to date
    backend = b"/local/domain/0/backend/vif/7/0"
    guest.dom0.write(guest.path("device/vif/0/backend"), backend)
    guest.dom0.write(backend + b"/state", b"4")
    guest.dom0.set_perms(backend + b"/state", [b"n0", b"r7"])
    v = json.loads(host_status(guest, "--json").stdout)
    assert v["PV_drivers_detected"] is True and v["PV_drivers_up_to_date"]["xapi"]["value"] is True
    assert v["PV_drivers_up_to_date"]["proposal"] == {"value": True, "why": "attr/PVAddons/NotUpgradable = 1"}
    text = host_status(guest).stdout.splitlines()
    assert "PV_drivers_up_to_date (xapi today) = true (set from PV_drivers_detected: a device's backend is " \
           "connected)" in text
    assert "networks[3/ip] = 10.3.0.1" in text and "PV_drivers = Linux 1.0.0, build 0" in text


def test_status_host_on_a_tree_dom0_broke(guest, current):
    """An image with the classic mistakes, written by dom0: what the guest's status --host says is
    what the host model reads, and each mistake has its line."""
    quick = QuickReader(guest.xsd.socket)
    try:
        t0 = time.monotonic()
        for key, value in (("attr/PVAddons/MajorVersion", b"1"), ("attr/PVAddons/MinorVersion", b"2.0"),
                           ("attr/PVAddons/MicroVersion", b"0"), ("attr/vif/0/ipv4/0", b"10.0.0.1"),
                           ("attr/vif/0/ipv4/x", b"10.0.0.2"), ("attr/vif/1/ipv4/0", b"10.1.0.1"),
                           ("data/os_name", b"Appliance \xe9"), ("data/volumes/0/name", b"/dev/xvda"),
                           ("control/feature-balloon", b"1")):
            quick.pipeline([(WRITE, (guest.path(key), value), 0)])   # pyxs refuses non-ASCII values
    finally:
        quick.close()
    current.wait_for(lambda v: v["other"].get("feature-balloon") and v["os_version"], since=t0)
    v = json.loads(host_status(guest, "--json").stdout)
    assert v["PV_drivers"] is None and current.view["pv_drivers_version"] == {}
    assert v["networks"] == current.view["networks"] == {"1/ip": "10.1.0.1", "1/ipv4/0": "10.1.0.1"}
    assert v["os_version"] == current.view["os_version"] == {"name": "Appliance \ufffd"}
    assert v["PV_drivers_up_to_date"]["proposal"] == {"value": False, "why": "no PV drivers"}
    for start in ("attr/PVAddons/MinorVersion = '2.0': not an integer", "attr/vif/0/ipv4: an index is not",
                  "data/os_name: not valid UTF-8", "data/volumes/0: never read", "data/updated is missing"):
        assert [w for w in v["warnings"] if w.startswith(start)], (start, v["warnings"])
    lines = host_status(guest).stdout.splitlines()
    assert "PV_drivers = none: xapi refuses what needs them (VM_MISSING_PV_DRIVERS)" in lines
    assert len([x for x in lines if x.startswith("warning: ")]) == len(v["warnings"])


@pytest.mark.parametrize("args, words, status", [
    (["status", "--product-version", "1.0.0"], "--product-version goes with --host", 2),
    (["status", "--host", "--product-version", "1.0"], "--product-version '1.0': must be X.Y.Z", 2),
    (["status", "--host", "--product-version", "8.\u0663.0"], "must be X.Y.Z", 2),
    (["status", "--host", "--xenstore", "/nonexistent"], "/nonexistent", 2),
])
def test_status_host_usage_errors_are_one_line(args, words, status):
    r = cli(*args)
    assert r.returncode == status and r.stderr.count("\n") == 1 and words in r.stderr and not r.stdout, r


def test_status_host_unreachable_is_one_line_exit_1(tmp_path):
    from tests.test_cli import refusing_socket
    path = refusing_socket(tmp_path / "sock")
    r = cli("status", "--host", "--xenstore", path)
    assert r.returncode == 1 and r.stderr.startswith("xe-guest-agent: cannot read XenStore at %s" % path), r
    assert r.stderr.count("\n") == 1 and not r.stdout


@pytest.fixture
def net(workdir):
    n = Net(workdir / "sys")
    yield n
    n.close()

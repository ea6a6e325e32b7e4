"""Turn VIFs, SR-IOV VFs and their addresses into XenStore keys with stable indexes. Pure: no I/O.

Keys: attr/vif/<devid>/ipv4/<n>, attr/vif/<devid>/ipv6/<n> and the same under
xenserver/attr/net-sriov-vf/<vf_id>/. xapi turns them into networks["<devid>/ipv4/<n>"], and the
lowest ipv4 index into networks["<devid>/ip"].

- An interface enslaved to a bridge or bond reports the master's addresses (and the master's
  master's: a bond in a bridge), then its own, under its devid.
- An address keeps its index while it lives (`previous`, as returned by the last call); a new one
  takes the lowest free index. New addresses are placed in a fixed order: the master's before the
  interface's own, then global before link-local, primary before secondary/temporary, preferred
  before deprecated, then by numeric value. So ipv4/0 is the primary address whenever the VIF gets
  its addresses in one go (boot, a resync).
- At most CAP addresses per family per device: 2 families x 16 + directories is ~35 nodes per VIF,
  so 7 VIFs (~250 nodes) stay well inside the default 1000-node XenStore quota of a guest. The
  addresses beyond the cap are left out, deterministically (the order above); one of them takes a
  slot when a reported address goes away.
"""
import ipaddress

from .. import schema

CAP = 16
VIF_PREFIX = "attr/vif"
SRIOV_PREFIX = "xenserver/attr/net-sriov-vf"
FAMILIES = ((4, "ipv4"), (6, "ipv6"))
MAX_MASTERS = 4  # depth of master chains followed (VIF -> bond -> bridge is 2); also stops loops
_F_SECONDARY, _F_DEPRECATED = 0x01, 0x20  # IFA_F_SECONDARY (= IFA_F_TEMPORARY for IPv6), IFA_F_DEPRECATED


def address_keys(vifs, sriov, links, addrs, previous=None, cap=CAP):
    """Return (keys, assignment).

    vifs, sriov: {ifindex: vif.Nic} (devid: Xen VIF id, resp. SR-IOV VF id);
    links: {ifindex: netlink.Link} (for masters; may be empty: then Nic.master_index is used);
    addrs: {ifindex: collection of (family 4|6, address text)}, e.g. netlink.Table.addrs, whose
           Addr values, when present, refine the order of new addresses;
    previous: the assignment returned last time ({} or None at first).
    keys: {path: address}; assignment: {"<prefix>/<devid>/ipv4|ipv6": {address: index}}.
    """
    previous = previous or {}
    sources = {}  # (prefix, devid) -> ifindexes whose addresses it reports, masters first
    for prefix, nics in ((VIF_PREFIX, vifs), (SRIOV_PREFIX, sriov)):
        for nic in sorted(nics.values(), key=lambda n: n.index):
            group = sources.setdefault((prefix, int(nic.devid)), [])
            for index in _masters(nic, links) + [nic.index]:
                if index not in group:
                    group.append(index)
    keys, assignment = {}, {}
    for (prefix, devid), group in sorted(sources.items()):
        for family, name in FAMILIES:
            base = "%s/%d/%s" % (prefix, devid, name)
            slots = _assign(_candidates(group, addrs, family), previous.get(base) or {}, cap)
            if slots:
                assignment[base] = slots
                for address, n in slots.items():
                    path = "%s/%d" % (base, n)
                    value = schema.safe_value(address)
                    if value and schema.valid_path(path):
                        keys[path] = value
    return keys, assignment


def _masters(nic, links):
    """The ifindexes of nic's master, its master's master... nearest first."""
    chain, index = [], links[nic.index].master if nic.index in links else nic.master_index
    while index and index != nic.index and index not in chain and len(chain) < MAX_MASTERS:
        chain.append(index)
        index = links[index].master if index in links else 0
    return chain


def _candidates(group, addrs, family):
    """Addresses of `family` on the interfaces of `group`, best first, without duplicates."""
    ranked = {}
    for pos, index in enumerate(group):
        entries = addrs.get(index) or ()
        for key in entries:
            fam, address = key
            if fam == family:
                rank = (pos,) + _rank(address, entries.get(key) if isinstance(entries, dict) else None)
                if address not in ranked or rank < ranked[address]:
                    ranked[address] = rank
    return sorted(ranked, key=ranked.get)


def _rank(address, meta):
    flags = getattr(meta, "flags", 0) or 0
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return (1, 1, 1, 1, 0, str(address))  # not an address: last, but still deterministic
    return (int(ip.is_link_local), int(bool(flags & _F_SECONDARY)), int(bool(flags & _F_DEPRECATED)), 0, int(ip), "")


def _assign(candidates, previous, cap):
    """{address: index}: live addresses keep their index, new ones fill the lowest free, up to cap."""
    live = set(candidates)
    slots, used = {}, set()
    for address, n in sorted(previous.items(), key=lambda kv: (str(kv[1]), str(kv[0]))):
        if address in live and isinstance(n, int) and 0 <= n < cap and n not in used:
            slots[address] = n
            used.add(n)
    free = (n for n in range(cap) if n not in used)
    for address in candidates:
        if address not in slots:
            n = next(free, None)
            if n is None:
                break
            slots[address] = n
    return dict(sorted(slots.items(), key=lambda kv: kv[1]))

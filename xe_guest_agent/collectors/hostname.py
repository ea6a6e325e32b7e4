"""data/host_name_dns and data/domain: the guest's host name and DNS domain.

xapi reads them into VM_guest_metrics.netbios_name["host_name"]: the value of data/host_name_dns,
followed by "." and data/domain when that key exists. So data/host_name_dns is the first label
only, and data/domain the rest, or the host would show "web1.example.com.example.com".

Only the guest's own configuration counts, never the network (no resolver, no DNS query):
1. the kernel's host name (what sethostname(2), `hostnamectl set-hostname` and `hostname` set):
   a name with dots is a fully qualified one, split at its first dot;
2. else /etc/hosts: the first line that lists the host name (as its canonical name or an alias)
   and whose canonical name is "<host name>.<domain>" gives the domain. That is the line
   `hostname -f` finds on a machine that resolves through files first (Debian's
   "127.0.1.1 web1.example.com web1").
Not used: resolv.conf's `domain` and `search` (the resolver's search list: the network's domain
that DHCP hands out, or systemd-resolved's "search ." stub, not this machine's name), and the
kernel's domainname (the NIS domain, unrelated to DNS, "(none)" on most systems).
"""
import re

from ..schema import DOMAIN, HOST_NAME, safe_value
from .os_info import _read

UNSET = "(none)"   # the kernel's host name before anyone set one
_DOMAIN = re.compile(r"^[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*$")


def read_hosts(path):
    """The start of the hosts file at `path` (os_info's reader: a regular file's first 64 KiB,
    where every installer puts the host's own line; never blocks on a FIFO), or "". Never raises."""
    return _read(path) or ""


def hosts_domain(text, host):
    """The domain /etc/hosts' `text` gives the short host name `host`, or None. Pure."""
    want = host.lower()
    for line in text.splitlines():
        if want not in line.lower():
            continue   # cheap first: most lines of a big file name other hosts
        names = [n.rstrip(".") for n in line.split("#", 1)[0].split()[1:]]
        if want not in (n.lower() for n in names):
            continue
        canonical = names[0]
        if canonical.lower().startswith(want + ".") and len(canonical) > len(want) + 1:
            return canonical[len(want) + 1:]
    return None


def keys(hostname, hosts=lambda: ""):
    """{HOST_NAME: the first label, DOMAIN: the domain, when known} from the kernel's host name;
    `hosts` returns /etc/hosts' text, and is only called when the host name has no domain of
    its own. An unset or empty host name gives {} (both keys removed). Pure but for `hosts`."""
    name = safe_value(hostname).rstrip(".")
    if name in ("", UNSET):
        return {}
    host, _, domain = name.partition(".")
    if not host:
        return {}
    if not domain:
        domain = hosts_domain(hosts(), host) or ""
    out = {HOST_NAME: host}
    if _DOMAIN.match(domain):
        out[DOMAIN] = domain
    return out

"""The systemd notification protocol (sd_notify) with the standard library only.

The protocol is one datagram of newline-separated KEY=VALUE lines sent to the AF_UNIX socket
named by $NOTIFY_SOCKET: a path, or an abstract name written with a leading '@'. Outside systemd
(or when the manager is gone) the variable is unset or the send fails; the agent must not care,
so every failure is swallowed and reported as False.
"""
import os
import socket

# A blocking send can only stall if the manager stops reading its queue; never hang the agent on it.
_SEND_TIMEOUT = 2.0


def notify(state: str) -> bool:
    """Send `state` (e.g. "READY=1", "STOPPING=1", "WATCHDOG=1") to the service manager.

    Returns True if the datagram was sent, False if $NOTIFY_SOCKET is unset, unsupported
    (e.g. a vsock address) or the send failed.
    """
    address = os.environ.get("NOTIFY_SOCKET", "")
    if address.startswith("@"):
        address = "\0" + address[1:]  # Linux abstract namespace
    elif not address.startswith("/"):
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(_SEND_TIMEOUT)
            sock.sendto(state.encode("utf-8"), address)
        return True
    except (OSError, ValueError):
        return False


def watchdog_interval():
    """Seconds between WATCHDOG=1 pings (half of $WATCHDOG_USEC, as sd_watchdog_enabled advises).

    None when the watchdog is off: $WATCHDOG_USEC unset or not a positive integer, or
    $WATCHDOG_PID set to another process (the variables were inherited, not meant for us).
    """
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    return usec / 2_000_000

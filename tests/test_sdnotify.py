"""sd_notify against a real AF_UNIX datagram socket, the way systemd listens for it."""
import os
import socket
import uuid

import pytest

from xe_guest_agent import sdnotify


@pytest.fixture
def listener(tmp_path, monkeypatch):
    """A datagram socket standing in for systemd's notify socket, named by $NOTIFY_SOCKET."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def test_ready_arrives_as_one_datagram(listener):
    assert sdnotify.notify("READY=1") is True
    assert listener.recv(4096) == b"READY=1"


def test_several_messages_keep_their_order_and_lines(listener):
    assert sdnotify.notify("STATUS=publishing\nREADY=1")
    assert sdnotify.notify("WATCHDOG=1")
    assert sdnotify.notify("STOPPING=1")
    assert [listener.recv(4096) for _ in range(3)] == [b"STATUS=publishing\nREADY=1", b"WATCHDOG=1", b"STOPPING=1"]


def test_abstract_socket_name(monkeypatch):
    name = "xe-guest-agent-test-" + uuid.uuid4().hex
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.notify("READY=1") is True
        assert sock.recv(4096) == b"READY=1"


def test_unset_is_silently_false(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False


@pytest.mark.parametrize("value", ["", "relative/path", "vsock:2:1234"])
def test_unsupported_address_is_false(monkeypatch, value):
    monkeypatch.setenv("NOTIFY_SOCKET", value)
    assert sdnotify.notify("READY=1") is False


def test_missing_socket_is_false_not_an_exception(tmp_path, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    assert sdnotify.notify("READY=1") is False


def test_listener_closed_is_false(listener, monkeypatch):
    path = os.environ["NOTIFY_SOCKET"]
    listener.close()
    os.unlink(path)
    assert sdnotify.notify("STOPPING=1") is False


@pytest.mark.parametrize(
    "usec, pid, expected",
    [
        ("30000000", None, 15.0),  # WatchdogSec=30s -> ping every 15 s
        ("1000000", "self", 0.5),
        ("30000000", "1", None),  # meant for another process (inherited)
        ("0", None, None),
        ("-5", None, None),
        ("soon", None, None),
        ("30000000", "x", None),
        (None, None, None),
    ],
)
def test_watchdog_interval(monkeypatch, usec, pid, expected):
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, str(os.getpid()) if value == "self" else value)
    if expected is None:
        assert sdnotify.watchdog_interval() is None
    else:
        assert sdnotify.watchdog_interval() == pytest.approx(expected)

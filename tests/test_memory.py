"""memory.collect on real and broken /proc/meminfo files, and the changed() rule."""
import pytest

from xe_guest_agent import schema
from xe_guest_agent.collectors import memory
from xe_guest_agent.collectors.memory import FREE, TOTAL

# A 6.1 kernel, trimmed.
MODERN = """\
MemTotal:        4014512 kB
MemFree:          183400 kB
MemAvailable:    3210716 kB
Buffers:          141188 kB
Cached:          2901948 kB
SwapCached:            0 kB
HugePages_Total:       0
HugePages_Free:        0
Hugepagesize:       2048 kB
DirectMap1G:           0 kB
"""

# A kernel older than 3.14: no MemAvailable.
OLD = """\
MemTotal:        1020176 kB
MemFree:          512044 kB
Buffers:           20244 kB
Cached:           310520 kB
SwapCached:            0 kB
"""


@pytest.mark.parametrize("text, expected", [
    (MODERN, {TOTAL: "4014512", FREE: "3210716"}),
    (OLD, {TOTAL: "1020176", FREE: "512044"}),
    ("MemAvailable: 5 kB\nMemTotal: 9 kB\nMemFree: 1 kB\n", {TOTAL: "9", FREE: "5"}),
    ("MemTotal: 0010 kB\nMemFree: 7\n", {TOTAL: "10", FREE: "7"}),
    ("MemTotal: 1024 kB\n", {TOTAL: "1024"}),
    ("MemFree: 77 kB\n", {FREE: "77"}),
    ("MemTotal: lots kB\nMemFree: -5 kB\nMemAvailable: 1.5 kB\n", {}),
    ("MemTotal: 4 MB\nMemAvailable: 12 kB extra\n", {}),
    ("MemTotal: " + "9" * 5000 + " kB\nMemFree: 3 kB\n", {FREE: "3"}),
    ("\x00\xff garbage\n\n:::\n", {}),
    ("", {}),
])
def test_collect(tmp_path, text, expected):
    path = tmp_path / "meminfo"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    result = memory.collect(str(path))
    assert result == expected
    assert set(result) <= set(schema.MEMORY_KEYS)


def test_collect_binary_and_missing(tmp_path):
    path = tmp_path / "meminfo"
    path.write_bytes(bytes(range(256)) * 50)
    assert memory.collect(str(path)) == {}
    assert memory.collect(str(tmp_path / "missing")) == {}
    assert memory.collect(str(tmp_path)) == {}
    assert memory.collect("/proc/meminfo\x00") == {}


def test_collect_real_proc():
    result = memory.collect()
    assert set(result) == {TOTAL, FREE}
    assert all(v.isdigit() for v in result.values())
    assert int(result[FREE]) <= int(result[TOTAL])


BASE = {TOTAL: "4000000", FREE: "2000000"}


@pytest.mark.parametrize("previous, new, threshold, expected", [
    (BASE, dict(BASE), 0, False),
    (BASE, dict(BASE), 1000, False),
    (BASE, {TOTAL: "4000000", FREE: "2000001"}, 0, True),
    (BASE, {TOTAL: "4000000", FREE: "2001000"}, 1000, False),
    (BASE, {TOTAL: "4000000", FREE: "1999000"}, 1000, False),
    (BASE, {TOTAL: "4000000", FREE: "2001001"}, 1000, True),
    (BASE, {TOTAL: "4000000", FREE: "1998999"}, 1000, True),
    (BASE, {TOTAL: "4000001", FREE: "2000000"}, 10 ** 9, True),
    (BASE, {TOTAL: "4000000"}, 10 ** 9, True),
    ({TOTAL: "4000000"}, BASE, 10 ** 9, True),
    ({}, {}, 0, False),
    ({}, BASE, 0, True),
    (BASE, {}, 0, True),
    ({FREE: "x"}, {FREE: "x"}, 0, False),
    ({FREE: "x"}, {FREE: "y"}, 10 ** 9, True),
    (BASE, dict(BASE), -5, False),
])
def test_changed(previous, new, threshold, expected):
    before = (dict(previous), dict(new))
    assert memory.changed(previous, new, threshold) is expected
    assert (previous, new) == before

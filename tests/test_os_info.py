"""os_info.collect against a corpus of real release files, each put in a fake root."""
import os
import random
import re
import shutil
from pathlib import Path

import pytest

from xe_guest_agent import schema
from xe_guest_agent.collectors import os_info

CORPUS = Path(__file__).parent / "data" / "os-release"
UNAME = "6.1.0-test"


def make_root(tmp_path, case, where="etc/os-release"):
    """A fake root holding corpus `case`: a file becomes `where`, a directory is /etc's content."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True, exist_ok=True)
    src = CORPUS / case
    if src.is_dir():
        for f in src.iterdir():
            shutil.copy(f, root / "etc" / f.name)
    else:
        (root / where).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, root / where)
    return root


def keys(name=None, distro=None, major=None, minor=None, uname=UNAME):
    values = {"data/os_name": name, "data/os_distro": distro, "data/os_majorver": major,
              "data/os_minorver": minor, "data/os_uname": uname}
    return {k: v for k, v in values.items() if v is not None}


CASES = {
    # os-release of real distributions
    "debian-11": keys("Debian GNU/Linux 11 (bullseye)", "debian", "11"),
    "debian-12": keys("Debian GNU/Linux 12 (bookworm)", "debian", "12"),
    "debian-sid": keys("Debian GNU/Linux trixie/sid", "debian"),
    "ubuntu-20.04": keys("Ubuntu 20.04.6 LTS", "ubuntu", "20", "04"),
    "ubuntu-22.04": keys("Ubuntu 22.04.4 LTS", "ubuntu", "22", "04"),
    "ubuntu-24.04": keys("Ubuntu 24.04 LTS", "ubuntu", "24", "04"),
    "rhel-7": keys("Red Hat Enterprise Linux Server 7.9 (Maipo)", "rhel", "7", "9"),
    "rhel-8": keys("Red Hat Enterprise Linux 8.9 (Ootpa)", "rhel", "8", "9"),
    "rhel-9": keys("Red Hat Enterprise Linux 9.3 (Plow)", "rhel", "9", "3"),
    "centos-7": keys("CentOS Linux 7 (Core)", "centos", "7"),
    "centos-stream-9": keys("CentOS Stream 9", "centos", "9"),
    "rocky-9": keys("Rocky Linux 9.3 (Blue Onyx)", "rocky", "9", "3"),
    "almalinux-9": keys("AlmaLinux 9.3 (Shamrock Pampas Cat)", "almalinux", "9", "3"),
    "oracle-8": keys("Oracle Linux Server 8.9", "oracle", "8", "9"),
    "fedora-39": keys("Fedora Linux 39 (Server Edition)", "fedora", "39"),
    "sles-12-sp5": keys("SUSE Linux Enterprise Server 12 SP5", "sles", "12", "5"),
    "sles-15-sp5": keys("SUSE Linux Enterprise Server 15 SP5", "sles", "15", "5"),
    "opensuse-leap-15.5": keys("openSUSE Leap 15.5", "opensuse", "15", "5"),
    "opensuse-tumbleweed": keys("openSUSE Tumbleweed", "opensuse"),  # VERSION_ID is a snapshot date
    "alpine-3.19": keys("Alpine Linux v3.19", "alpine", "3", "19"),
    "arch": keys("Arch Linux", "arch"),
    "gentoo": keys("Gentoo Linux", "gentoo"),  # VERSION_ID is baselayout's version
    "amzn-2023": keys("Amazon Linux 2023", "amzn", "2023"),
    "cloudlinux-8": keys("CloudLinux 8.9 (Valery Rozhdestvensky)", "cloudlinux", "8", "9"),
    "kylin-v10": keys("Kylin Linux Advanced Server V10 (Lance)", "kylin"),  # VERSION_ID="V10"
    "nixos-23.11": keys("NixOS 23.11 (Tapir)", "nixos", "23", "11"),
    "talos-1.6": keys("Talos (v1.6.1)", "talos"),  # VERSION_ID=v1.6.1
    "haos-11": keys("Home Assistant OS 11.4", "haos", "11", "4"),
    # odd files
    "odd-crlf": keys("Debian GNU/Linux 12 (bookworm)", "debian", "12"),
    "odd-non-ascii": keys("Debian GNU/Linux 12 (b??kworm)", "debian", "12"),
    "odd-cjk": keys("?????????? V10", "kylin"),
    "odd-latin1": keys("Caf? Linux", "cafe", "1", "0"),
    "odd-escapes": keys(r'Say "hi" \ costs $5 `now` \n \a', "escape", "4", "2"),
    "odd-single-quotes": keys(r"It costs $5 \ and `cmd`", "single", "3", "1"),
    "odd-no-pretty-name": keys("Foo Linux 2.5 (Bar)", "foo", "2", "5"),
    "odd-huge-value": keys(("Huge " + "x" * 100000)[:schema.MAX_VALUE], "huge", "1", "2"),
    "odd-nul-bytes": keys("Nul Linux 5", "nulos", "5"),
    "odd-windows": keys("Windows 10 Pro", None, "10", "0"),
    "odd-windows-caps": keys("Windows Server 2022"),
    "odd-empty": keys(),
    "odd-garbage": keys(),
    "odd-unterminated": keys("never closed", "open", "7"),
    # no inline comments in os-release (as systemd reads it); the last ID wins
    "odd-spacing": keys("Spaced Linux 10 LTS # trailing", "spaced_distro-2", "10", "20"),
    "odd-no-id": keys("Nameless", None, "1"),
    # systems older than os-release: a directory is the content of /etc
    "legacy/centos-5": keys("CentOS release 5.11 (Final)", "centos", "5", "11"),
    "legacy/centos-6": keys("CentOS release 6.10 (Final)", "centos", "6", "10"),
    "legacy/rhel-4": keys("Red Hat Enterprise Linux AS release 4 (Nahant Update 9)", "rhel", "4", "9"),
    "legacy/rhel-5-beta": keys("Red Hat Enterprise Linux Server release 5.1 Beta (Tikanga)", "rhel", "5", "1"),
    "legacy/rhel-6": keys("Red Hat Enterprise Linux Server release 6.10 (Santiago)", "rhel", "6", "10"),
    "legacy/rhel-6-lsb": keys("Red Hat Enterprise Linux Server release 6.10 (Santiago)", "rhel", "6", "10"),
    "legacy/oracle-5": keys("Enterprise Linux Enterprise Linux Server release 5.11 (Carthage)", "oracle", "5", "11"),
    "legacy/oracle-6": keys("Oracle Linux Server release 6.10", "oracle", "6", "10"),
    "legacy/cloudlinux-7": keys("CloudLinux release 7.9 (Boris Yegorov)", "cloudlinux", "7", "9"),
    "legacy/fedora-core-3": keys("Fedora Core release 3 (Heidelberg)", "fedora", "3"),
    "legacy/scientific-6": keys("Scientific Linux release 6.10 (Carbon)", "scientific", "6", "10"),
    "legacy/xcp-ng-8": keys("XCP-ng release 8.2.1 (xenenterprise)", None, "8", "2"),
    "legacy/sles-11-sp4": keys("SUSE Linux Enterprise Server 11 (x86_64)", "sles", "11", "4"),
    "legacy/opensuse-13.2": keys("openSUSE 13.2 (x86_64)", "opensuse", "13", "2"),
    "legacy/debian-7": keys("Debian 7.11", "debian", "7", "11"),
    "legacy/debian-testing": keys("Debian bookworm/sid", "debian"),
    "legacy/ubuntu-12.04": keys("Ubuntu 12.04.5 LTS", "ubuntu", "12", "04"),
    "legacy/lsb-only-version": keys(),
}


def corpus_cases():
    found = {p.name for p in CORPUS.iterdir() if p.name != "legacy"}
    found |= {"legacy/" + p.name for p in (CORPUS / "legacy").iterdir()}
    return sorted(found)


def test_every_corpus_entry_has_an_expectation():
    assert corpus_cases() == sorted(CASES)


@pytest.mark.parametrize("case", sorted(CASES))
def test_corpus(tmp_path, case):
    assert os_info.collect(root=str(make_root(tmp_path, case)), uname=UNAME) == CASES[case]


def assert_safe(result):
    assert set(result) <= set(schema.OS_KEYS)
    for value in result.values():
        assert isinstance(value, str)
        assert re.match(r"^[\x20-\x7e]+$", value)
        assert len(value.encode()) <= schema.MAX_VALUE
    assert result.get("data/os_distro") != "windows"
    for key in ("data/os_majorver", "data/os_minorver"):
        assert re.match(r"^[0-9]+$", result.get(key, "0"))
    assert "data/os_minorver" not in result or "data/os_majorver" in result


@pytest.mark.parametrize("where", ["etc/os-release", "usr/lib/os-release", "etc/lsb-release",
                                   "etc/redhat-release", "etc/SuSE-release", "etc/debian_version"])
@pytest.mark.parametrize("case", sorted(c for c in CASES if not c.startswith("legacy/")))
def test_values_are_always_safe(tmp_path, case, where):
    assert_safe(os_info.collect(root=str(make_root(tmp_path, case, where)), uname=UNAME))


@pytest.mark.parametrize("seed", range(40))
def test_random_bytes_never_raise(tmp_path, seed):
    rng = random.Random(seed)
    alphabet = b"=\"'\\$`#.\n\r\t \x00\xff\xc3\xa9IDNAMEPRETTY_VERSION_windows0123456789"
    for where in ("etc/os-release", "etc/redhat-release", "etc/SuSE-release", "etc/lsb-release",
                  "etc/debian_version"):
        path = tmp_path / where
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes(rng.choice(alphabet) for _ in range(rng.randrange(400))))
        assert_safe(os_info.collect(root=str(tmp_path), uname=UNAME))
        path.unlink()


def test_etc_wins_over_usr_lib(tmp_path):
    root = make_root(tmp_path, "debian-12")
    make_root(tmp_path, "ubuntu-24.04", "usr/lib/os-release")
    assert os_info.collect(str(root), UNAME) == CASES["debian-12"]


def test_usr_lib_when_etc_has_none(tmp_path):
    root = make_root(tmp_path, "arch", "usr/lib/os-release")
    assert os_info.collect(str(root), UNAME) == CASES["arch"]


def test_relative_symlink_as_shipped_by_systemd(tmp_path):
    root = make_root(tmp_path, "fedora-39", "usr/lib/os-release")
    os.symlink("../usr/lib/os-release", str(root / "etc" / "os-release"))
    assert os_info.collect(str(root), UNAME) == CASES["fedora-39"]


@pytest.mark.parametrize("junk", ["odd-empty", "odd-garbage"])
def test_useless_etc_file_falls_through_to_the_next_source(tmp_path, junk):
    root = make_root(tmp_path, junk)
    make_root(tmp_path, "rocky-9", "usr/lib/os-release")
    assert os_info.collect(str(root), UNAME) == CASES["rocky-9"]
    (root / "usr/lib/os-release").unlink()
    (root / "etc/debian_version").write_text("7.11\n")
    assert os_info.collect(str(root), UNAME) == CASES["legacy/debian-7"]


def test_os_release_wins_over_legacy_files(tmp_path):
    root = make_root(tmp_path, "legacy/centos-6")
    shutil.copy(CORPUS / "centos-7", root / "etc" / "os-release")
    assert os_info.collect(str(root), UNAME) == CASES["centos-7"]


def test_lsb_release_wins_over_debian_version(tmp_path):
    root = make_root(tmp_path, "legacy/ubuntu-12.04")
    assert (root / "etc" / "debian_version").exists()
    assert os_info.collect(str(root), UNAME) == CASES["legacy/ubuntu-12.04"]


def test_fifo_directory_and_missing_root_do_not_block_or_raise(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    os.mkfifo(str(root / "etc" / "os-release"))
    (root / "etc" / "redhat-release").mkdir()
    assert os_info.collect(str(root), UNAME) == keys()
    assert os_info.collect(str(tmp_path / "nowhere"), UNAME) == keys()
    assert os_info.collect("/dev/null\x00", UNAME) == keys()


def test_uname(tmp_path):
    root = make_root(tmp_path, "debian-12")
    assert os_info.collect(str(root))["data/os_uname"] == os.uname().release
    assert "data/os_uname" not in os_info.collect(str(root), uname="")
    assert os_info.collect(str(root), uname="5.10.0-\u00e9\n")["data/os_uname"] == "5.10.0-e"


def test_the_running_system(tmp_path):
    assert_safe(os_info.collect())


@pytest.mark.parametrize("text, expected", [
    ('A=plain', {"A": "plain"}),
    ('A="double quoted"', {"A": "double quoted"}),
    ("A='single \\ $x \"q\"'", {"A": 'single \\ $x "q"'}),
    (r'A="\" \\ \$ \` \n"', {"A": r'" \ $ ` \n'}),
    (r'A=back\ slash', {"A": "back slash"}),
    ('A="con"\'cat\'enated', {"A": "concatenated"}),
    ('A=', {"A": ""}),
    ('A=""', {"A": ""}),
    ('# A=comment\n  #B=x\n\nno equals\n=x\n1A=x\nA B=x\nC=3', {"C": "3"}),
    ('A=1\nA=2', {"A": "2"}),
    ('A="1"\r\nB=2\r\n', {"A": "1", "B": "2"}),
    ('A="unterminated', {"A": "unterminated"}),
    ('A=x=y', {"A": "x=y"}),
    ('A="line\u2028sep"', {"A": "line\u2028sep"}),
])
def test_parse(text, expected):
    assert os_info.parse(text) == expected

"""The flag watch in-process, on the real filesystem: every way a file can come and go."""
import os
import select

from xe_guest_agent.flagwatch import FlagWatch, chain


def settle(w):
    """Wait (bounded) for the inotify descriptor, then drain it: True if presence may have changed."""
    changed = False
    while select.select([w], [], [], 0.2)[0]:
        changed |= w.changed()
    return changed


def test_create_delete_rename_replace(tmp_path):
    flag = tmp_path / "flag"
    w = FlagWatch(str(flag))
    assert not w.present()
    flag.write_text("")
    assert settle(w) and w.present()
    (tmp_path / "tmp").write_text("x")
    os.rename(tmp_path / "tmp", flag)
    assert settle(w) and w.present()
    os.rename(flag, tmp_path / "away")
    assert settle(w) and not w.present()
    os.rename(tmp_path / "away", flag)
    assert settle(w) and w.present()
    flag.unlink()
    assert settle(w) and not w.present()
    w.close()


def test_unrelated_names_are_ignored(tmp_path):
    w = FlagWatch(str(tmp_path / "flag"))
    (tmp_path / "other").write_text("")
    assert not settle(w)
    w.close()


def test_symlink_chain_across_directories(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    flag, middle, target = a / "flag", b / "middle", tmp_path / "target"
    os.symlink(middle, flag)
    os.symlink(target, middle)
    assert [d for d, _ in chain(str(flag))] == [str(a), str(b), str(tmp_path)]
    w = FlagWatch(str(flag))
    assert not w.present()                      # dangling
    target.write_text("")
    assert settle(w) and w.present()
    target.unlink()
    assert settle(w) and not w.present()
    os.unlink(middle)
    os.symlink(a / "real", middle)              # re-pointed into a
    (a / "real").write_text("")
    assert settle(w) and w.present()
    w.close()


def test_missing_directory_is_watched_from_its_parent(tmp_path):
    flag = tmp_path / "d" / "e" / "flag"
    w = FlagWatch(str(flag))
    assert chain(str(flag)) == [(str(tmp_path), "d")]
    (tmp_path / "d" / "e").mkdir(parents=True)
    settle(w)
    flag.write_text("")
    assert settle(w) and w.present()
    w.close()


def test_symlink_loop_does_not_hang(tmp_path):
    os.symlink(tmp_path / "y", tmp_path / "x")
    os.symlink(tmp_path / "x", tmp_path / "y")
    w = FlagWatch(str(tmp_path / "x"))
    assert not w.present()
    w.close()

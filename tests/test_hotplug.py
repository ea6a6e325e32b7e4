"""feature/hotplug/vif and feature/hotplug/vbd: "1" while sysfs shows the Xen frontends' drivers,
judged as xapi's can_use_hotplug_vif/vbd by the current host model over the real xenstored."""
import os
import shutil
import time

from xe_guest_agent import schema
from xe_guest_agent.collectors import hotplug


def drivers(sysfs, *names):
    for name in names:
        os.makedirs(os.path.join(str(sysfs), "bus", "xen", "drivers", name))


def test_collect(tmp_path):
    assert hotplug.collect(str(tmp_path)) == {}
    assert hotplug.collect(str(tmp_path / "missing")) == {}
    drivers(tmp_path, "vif")
    assert hotplug.collect(str(tmp_path)) == {"feature/hotplug/vif": "1"}
    drivers(tmp_path, "vbd", "vkbd", "9pfs")       # other frontends mean nothing here
    assert hotplug.collect(str(tmp_path)) == {"feature/hotplug/vif": "1", "feature/hotplug/vbd": "1"}
    # A file of that name is not a registered driver.
    shutil.rmtree(str(tmp_path / "bus" / "xen" / "drivers" / "vif"))
    (tmp_path / "bus" / "xen" / "drivers" / "vif").write_text("")
    assert hotplug.collect(str(tmp_path)) == {"feature/hotplug/vbd": "1"}


def test_keys_are_declared_once_in_the_schema():
    for key in schema.HOTPLUG_KEYS:
        assert key in schema.OWNED_KEYS and schema.valid_path(key)
        assert any(key == w or key.startswith(w + "/") for w in schema.WATCHED)
        assert key.startswith(schema.HOST_WATCHED)   # xenopsd looks when it changes


def both(vif, vbd):
    return lambda v: (v["can_use_hotplug_vif"], v["can_use_hotplug_vbd"]) == (vif, vbd)


def test_frontends_at_start_are_published(guest, current, run_agent, workdir):
    drivers(workdir / "sys", "vif", "vbd")
    run_agent(guest.device)
    current.wait_for(both("yes", "yes"), timeout=5, what="both frontends")
    assert guest.read("feature/hotplug/vif") == b"1" and guest.read("feature/hotplug/vbd") == b"1"


def test_no_frontend_publishes_nothing_never_0(guest, current, run_agent, workdir):
    """xapi reads "0" as "refuse plug and unplug": an absent driver may be a module still to be
    loaded, so the agent leaves the key out (unspecified) instead. A key left by an earlier
    run is removed."""
    guest.dom0.write(guest.path("feature/hotplug/vbd"), b"1")
    run_agent(guest.device)
    current.wait_for(lambda v: v["pv_drivers_version"] and v["can_use_hotplug_vbd"] == "unspecified",
                     timeout=5, what="the stale key removed")
    assert guest.read("feature/hotplug/vif") is None and guest.read("feature/hotplug/vbd") is None


def test_a_frontend_loaded_or_unloaded_later_is_followed_at_the_memory_tick(guest, current, run_agent, workdir):
    (workdir / "agent.conf").write_text("memory_interval = 0.2\n")
    drivers(workdir / "sys", "vif")
    run_agent(guest.device)
    current.wait_for(both("yes", "unspecified"), timeout=5)
    t0 = time.monotonic()
    drivers(workdir / "sys", "vbd")                          # modprobe xen-blkfront
    current.wait_for(both("yes", "yes"), since=t0, timeout=3, what="blkfront loaded")
    t0 = time.monotonic()
    os.rmdir(str(workdir / "sys" / "bus" / "xen" / "drivers" / "vif"))   # rmmod xen-netfront
    current.wait_for(both("unspecified", "yes"), since=t0, timeout=3, what="netfront gone")
    assert guest.read("feature/hotplug/vif") is None


def test_a_removed_key_comes_back_and_a_0_is_repaired(guest, current, run_agent, workdir):
    drivers(workdir / "sys", "vif", "vbd")
    run_agent(guest.device)
    current.wait_for(both("yes", "yes"), timeout=5)
    t0 = time.monotonic()
    guest.dom0.delete(guest.path("feature/hotplug/vif"))
    guest.dom0.write(guest.path("feature/hotplug/vbd"), b"0")
    current.wait_for(both("yes", "yes"), since=t0, timeout=2, what="both repaired")

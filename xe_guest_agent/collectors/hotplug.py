"""feature/hotplug/vif and feature/hotplug/vbd: the guest's kernel has the Xen network and block
frontends, so it brings a hot-plugged VIF or VBD online at once.

xapi reads them into VM_guest_metrics.can_use_hotplug_vif / can_use_hotplug_vbd: "1" is yes, "0"
no, anything else (absent) unspecified. It consults them for HVM guests only: "0" refuses
VIF/VBD plug and unplug while the guest runs; unspecified falls back to "PV drivers detected".
So the agent writes "1" when the frontend is there and removes the key when it is not, never
"0": a frontend built as a module is loaded by udev for the first device of its kind
(MODALIAS xen:vif, xen:vbd), so a guest that booted without one can still take a hot-plug.

A xenbus frontend registers its driver on the "xen" bus under the first name in its id table
(xenbus_register_driver_common: drv->name, or else ids[0].devicetype); neither sets a name and
their tables are { "vif" } (xen-netfront) and { "vbd" } (xen-blkfront). The driver's directory
exists while it is registered, built in or loaded as a module.
"""
import os

from ..schema import HOTPLUG_VBD, HOTPLUG_VIF

DRIVERS = ((HOTPLUG_VIF, "vif"), (HOTPLUG_VBD, "vbd"))


def collect(sysfs="/sys"):
    """{key: "1"} for each frontend whose driver sysfs shows below `sysfs`. Never raises."""
    return {key: "1" for key, name in DRIVERS if os.path.isdir(os.path.join(sysfs, "bus", "xen", "drivers", name))}

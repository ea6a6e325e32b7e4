"""xe-guest-agent: the in-guest Linux agent for Xen hosts run by xapi."""

# The PVAddons version keys default to these numbers (see config.Config).
__version__ = "1.0.0"

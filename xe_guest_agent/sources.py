"""Sources: the shell's side of each collector. A source owns any I/O its collector needs beyond
reading files (a netlink socket, a timer), and hands the agent plain {key: value} data.
"""
from . import schema


class Source:
    """Defaults for a source that contributes nothing: subclasses override what they need."""

    def attach(self, agent):
        """Called once by the agent: register descriptors and timers here."""
        self.agent = agent

    def keys(self):
        """{key: value} this source wants published now."""
        return {}

    def owned_keys(self):
        """Fixed keys (beyond schema.OWNED_KEYS) this source publishes and may need to remove."""
        return []

    def reset(self):
        """A new domain or connection: collect afresh."""

    def refresh(self, xs):
        """Read what the source needs from XenStore (called before each plan)."""

    def on_timer(self, name):
        """A timer of the agent's has fired."""

    def reload(self, config):
        """The configuration has been reloaded (SIGHUP)."""


class Balloon(Source):
    """control/feature-balloon = 1: the guest's balloon driver can honour memory/target."""

    def __init__(self, config):
        self.enabled = config.feature_balloon

    def keys(self):
        return {schema.FEATURE_BALLOON: "1"} if self.enabled else {}

    def owned_keys(self):
        return [schema.FEATURE_BALLOON] if self.enabled else []

    def reload(self, config):
        self.enabled = config.feature_balloon


def default_sources(config, sysfs="/sys"):
    return [Balloon(config)]

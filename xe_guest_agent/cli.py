"""Command line: `run` the agent, `show` what it would publish, read back its `status`."""
import json
import logging
import sys

import click

from . import __version__, publisher, schema
from . import config as configmod
from .xenstore import XenStore, default_path


def fail(message, status=2):
    click.echo("xe-guest-agent: " + message, err=True)
    sys.exit(status)


def load_config(config_path, **flags):
    try:
        return configmod.load(config_path, flags)
    except configmod.ConfigError as e:
        fail(str(e))


def version_options(f):
    for name in ("build", "micro", "minor", "major"):
        f = click.option("--%s-version" % name, metavar="N",
                         help="attr/PVAddons/%sVersion (default: from the package version)." % name.title())(f)
    return f


def common_options(f):
    f = click.option("--sysfs", default="/sys", hidden=True, help="Root of the sysfs tree to read (tests).")(f)
    f = click.option("--os-root", default="/", hidden=True, help="Root under which to read os-release (tests).")(f)
    f = click.option("--meminfo", default="/proc/meminfo", hidden=True, help="meminfo file to read (tests).")(f)
    f = click.option("--flag-file", metavar="PATH",
                     help="File whose presence publishes NotUpgradable (default %s)." % configmod.DEFAULT_FLAG_FILE)(f)
    f = click.option("--config", "config_path", metavar="FILE",
                     help="Config file (default %s; a missing default is fine)." % configmod.DEFAULT_CONFIG)(f)
    return version_options(f)


def make_sources(config, sysfs, os_root, meminfo):
    from .sources import default_sources
    return default_sources(config, sysfs, os_root, meminfo)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="xe-guest-agent", message="%(prog)s %(version)s")
def main():
    """In-guest agent for Xen hosts run by xapi (XenServer, XCP-ng): publishes the guest-tools
    version, the NotUpgradable flag and guest metrics into XenStore and keeps them true."""


@main.command()
@click.option("--xenstore", "xenstore_path", metavar="PATH",
              help="Unix socket or xenbus device (default $XENSTORED_PATH, /dev/xen/xenbus, /proc/xen/xenbus).")
@common_options
@click.option("--log-level", type=click.Choice(configmod.LOG_LEVELS, case_sensitive=False),
              help="Log level (default warning: silent at idle).")
def run(xenstore_path, config_path, flag_file, sysfs, os_root, meminfo, log_level, **versions):
    """Publish to XenStore and keep it true until SIGTERM."""
    import signal
    # Until the agent's own handlers are in place (after its imports), a stop is still a clean exit.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: sys.exit(0))
    overrides = dict(flag_file=flag_file, log_level=log_level, **versions)
    config = load_config(config_path, **overrides)
    path = xenstore_path or default_path()
    if not path:
        fail("no XenStore here (/dev/xen/xenbus and /proc/xen/xenbus missing, $XENSTORED_PATH unset): not a Xen guest?")
    logging.basicConfig(stream=sys.stderr, level=config.logging_level, format="%(levelname)s: %(message)s")
    from .agent import Agent   # only `run` pays for the event loop's imports
    agent = Agent(config, path, config_path, overrides, make_sources(config, sysfs, os_root, meminfo))
    sys.exit(agent.run())


@main.command()
@common_options
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
def show(config_path, flag_file, sysfs, os_root, meminfo, as_json, **versions):
    """Print what `run` would publish now (needs no XenStore)."""
    import os
    config = load_config(config_path, flag_file=flag_file, **versions)
    extra = {}
    for source in make_sources(config, sysfs, os_root, meminfo):
        source.collect()
        extra.update(source.keys())
    state = publisher.desired_state(config, os.path.exists(config.flag_file), extra)
    print_keys(state, as_json)


@main.command()
@click.option("--xenstore", "xenstore_path", metavar="PATH", help="Unix socket or xenbus device.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
def status(xenstore_path, as_json):
    """Print the agent's keys as XenStore holds them now."""
    path = xenstore_path or default_path()
    if not path:
        fail("no XenStore here (/dev/xen/xenbus and /proc/xen/xenbus missing, $XENSTORED_PATH unset): not a Xen guest?")
    xs = XenStore(path)
    try:
        xs.connect()
        state = {}
        for key in schema.OWNED_KEYS + (schema.FEATURE_BALLOON, schema.UPDATED):
            value = xs.read(key)
            if value is not None:
                state[key] = value
        for tree in schema.OWNED_SUBTREES:
            state.update(xs.walk(tree))
    except Exception as e:   # unreachable, refused, timed out: one line either way
        fail("cannot read XenStore at %s: %s" % (path, e), 1)
    finally:
        xs.close()
    print_keys(state, as_json)


def print_keys(state, as_json):
    keys = sorted(state, key=lambda k: (schema.write_rank(k), k))
    if as_json:
        click.echo(json.dumps({k: state[k] for k in keys}, indent=2))
    else:
        for k in keys:
            click.echo("%s = %s" % (k, state[k]))

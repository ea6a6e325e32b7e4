"""Command line: `run` the agent, `show` what it would publish, read back its `status` (and, with
--host, what xapi makes of it), and `xenstore` read|write|rm|ls|exists|watch for guest scripts.

Works with click 6.7 (RHEL 8) and later: no option feature newer than 6.7 is relied on.
"""
import signal
import sys

# A stop that lands while the imports below run (a unit stopped at once) is a clean exit, not a
# traceback; `run` keeps this until the agent's own handlers are in place, show and status drop it.
for _sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(_sig, lambda *_: sys.exit(0))

import logging   # noqa: E402
import os        # noqa: E402

import click     # noqa: E402
import click.core  # noqa: E402

# Not hostview, xstool, json: only status and xenstore need them, and every start of `run` (on a
# small VM, or the emulated guest of the real-host bed, 190 times slower) would pay for them.
from . import __version__, publisher, schema  # noqa: E402
from . import config as configmod  # noqa: E402
from .xenstore import DEFAULT_PATHS, XenStore, default_path, in_xen_guest  # noqa: E402


# Exit status: 2 for a usage, config or environment error (bad flag, bad config, no XenStore, a
# missing --xenstore path), 1 for a runtime failure (XenStore refused or timed out).
USAGE, RUNTIME = 2, 1

# click < 8.1 refuses to start under an ASCII locale on Python 3.6, after running `locale -a`: a
# unit started under the C locale must still run, and the agent prints only ASCII.
for _name in ("_verify_python3_env", "_verify_python_env"):
    if hasattr(click.core, _name):
        setattr(click.core, _name, lambda: None)


def _hidden():
    """Keyword arguments that hide an option; click 6 has none, so there --help shows it."""
    try:
        click.Option(["--probe"], hidden=True)
        return {"hidden": True}
    except TypeError:
        return {}


HIDDEN = _hidden()
NO_XENSTORE = "no XenStore here (/dev/xen/xenbus and /proc/xen/xenbus missing, $XENSTORED_PATH unset): not a Xen guest?"


def default_signals():
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def fail(message, status=USAGE):
    click.echo("xe-guest-agent: " + message, err=True)
    sys.exit(status)


def xenstore_path(explicit, wait_in=None):
    """The path to use: an explicit one must exist now; else the default, or a one-line exit 2.
    `wait_in` (a sysfs root): in a Xen guest whose xenbus device is not there yet (early boot, a
    module still loading), the device's path anyway: the agent retries until it appears, where
    exit 2 would stop the unit for good (RestartPreventExitStatus=2)."""
    if explicit is not None:
        if not explicit:
            fail("--xenstore: empty path")
        if not os.path.exists(explicit):
            fail("--xenstore %s: no such file or socket" % explicit)
        return explicit
    found = default_path()
    if not found and wait_in is not None and in_xen_guest(wait_in):
        return DEFAULT_PATHS[0]
    return found or fail(NO_XENSTORE)


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
    f = click.option("--sysfs", default="/sys", help="Root of the sysfs tree to read (tests).", **HIDDEN)(f)
    f = click.option("--os-root", default="/", help="Root under which to read os-release (tests).", **HIDDEN)(f)
    f = click.option("--meminfo", default="/proc/meminfo", help="meminfo file to read (tests).", **HIDDEN)(f)
    f = click.option("--flag-file", metavar="PATH",
                     help="File whose presence publishes NotUpgradable (default %s)." % configmod.DEFAULT_FLAG_FILE)(f)
    f = click.option("--config", "config_path", metavar="FILE",
                     help="Config file (default %s; a missing default is fine)." % configmod.DEFAULT_CONFIG)(f)
    return version_options(f)


def make_sources(config, sysfs, os_root, meminfo):
    from .sources import default_sources
    return default_sources(config, sysfs, os_root, meminfo)


def main(args=None, prog_name="xe-guest-agent"):
    """The entry point: click's own errors become one line, as ours are."""
    try:
        rv = cli.main(args=args, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.ClickException as e:
        if type(e).__name__ == "NoArgsIsHelpError":   # click 8.2+: no command given, show the help
            e.show()
            sys.exit(e.exit_code)
        where = e.ctx.command_path if isinstance(e, click.UsageError) and e.ctx else prog_name
        hint = " (see '%s --help')" % where if isinstance(e, click.UsageError) else ""
        fail(" ".join(e.format_message().split()) + hint, USAGE if isinstance(e, click.UsageError) else e.exit_code)
    except click.exceptions.Abort:
        fail("aborted", RUNTIME)
    sys.exit(rv if isinstance(rv, int) else 0)   # --help and --version return 0 here (click 7+)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="xe-guest-agent", message="%(prog)s %(version)s")
def cli():
    """In-guest agent for Xen hosts run by xapi (XenServer, XCP-ng): publishes the guest-tools
    version, the NotUpgradable flag and guest metrics into XenStore and keeps them true."""


@cli.command()
@click.option("--xenstore", "explicit_path", metavar="PATH",
              help="Unix socket or xenbus device (default $XENSTORED_PATH, /dev/xen/xenbus, /proc/xen/xenbus).")
@common_options
# Not a click.Choice: the config checks it, so a bad value is one line naming the flag, on any click.
@click.option("--log-level", metavar="LEVEL", help="debug, info, warning or error (default warning: silent at idle).")
def run(explicit_path, config_path, flag_file, sysfs, os_root, meminfo, log_level, **versions):
    """Publish to XenStore and keep it true until SIGTERM."""
    overrides = dict(flag_file=flag_file, log_level=log_level, **versions)
    config = load_config(config_path, **overrides)
    path = xenstore_path(explicit_path, wait_in=sysfs)
    logging.basicConfig(stream=sys.stderr, level=config.logging_level, format="%(levelname)s: %(message)s")
    from .agent import Agent   # only `run` pays for the event loop's imports
    agent = Agent(config, path, config_path, overrides, make_sources(config, sysfs, os_root, meminfo))
    sys.exit(agent.run())


@cli.command()
@common_options
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
def show(config_path, flag_file, sysfs, os_root, meminfo, as_json, **versions):
    """Print what `run` would publish now (needs no XenStore)."""
    default_signals()
    config = load_config(config_path, flag_file=flag_file, **versions)
    extra = {}
    for source in make_sources(config, sysfs, os_root, meminfo):
        source.collect()
        extra.update(source.keys())
    state = publisher.desired_state(config, os.path.exists(config.flag_file), extra)
    print_keys(state, as_json)


@cli.command()
@click.option("--xenstore", "explicit_path", metavar="PATH", help="Unix socket or xenbus device.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@click.option("--host", "host", is_flag=True,
              help="Print what xapi makes of the guest's keys, by the host's own rules, and a warning "
                   "for each thing a host would drop or misread.")
@click.option("--product-version", metavar="X.Y.Z",
              help="With --host: the host's version, for the proposal's PV_drivers_up_to_date.")
def status(explicit_path, as_json, host, product_version):
    """Print the agent's keys as XenStore holds them now (--host: as xapi sees them)."""
    default_signals()
    product = None
    if product_version is not None:
        if not host:
            fail("--product-version goes with --host (see 'xe-guest-agent status --help')")
        from . import hostview
        product = hostview.parse_product_version(product_version)
        if product is None:
            fail("--product-version %r: must be X.Y.Z, three integers" % product_version)
    path = xenstore_path(explicit_path)
    if host:
        return host_status(path, as_json, product)
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
        fail("cannot read XenStore at %s: %s" % (path, e), RUNTIME)
    finally:
        xs.close()
    print_keys(state, as_json)


def host_status(path, as_json, product):
    import json
    from . import hostview, xstool
    xs = XenStore(path)
    try:
        xs.connect()
        nodes, backends = xstool.read_home(xs)
    except xstool.ToolError as e:
        fail(str(e), e.status)
    except Exception as e:   # unreachable, refused, timed out: one line either way
        fail("cannot read XenStore at %s: %s" % (path, e), RUNTIME)
    finally:
        xs.close()
    view = hostview.view(nodes, product, backends)
    if as_json:
        click.echo(json.dumps(hostview.sorted_view(view), indent=2))
    else:
        for line in hostview.text_lines(view):
            click.echo(line)


def print_keys(state, as_json):
    keys = sorted(state, key=lambda k: (schema.write_rank(k), k))
    if as_json:
        import json
        click.echo(json.dumps({k: state[k] for k in keys}, indent=2))
    else:
        for k in keys:
            click.echo("%s = %s" % (k, state[k]))


# -- xenstore: the classic tools for guest scripts -------------------------------------------------

def xenstore_option(f):
    return click.option("--xenstore", "explicit_path", metavar="PATH",
                        help="Unix socket or xenbus device (default $XENSTORED_PATH, /dev/xen/xenbus, "
                             "/proc/xen/xenbus).")(f)


@cli.group("xenstore")
def xenstore_tools():
    """Read and write XenStore from guest scripts, as xenstore-read, -write, -rm, -list, -exists and
    -watch do. A relative PATH lies below the guest's home (/local/domain/<domid>); an absolute one
    is used as given. A missing key exits 1."""


def tool(explicit_path, name, args, check=()):
    """Check the paths (a bad one is a usage error), then run xstool.<name>(xs, *args) on the
    connection."""
    from . import xstool
    action = getattr(xstool, name)
    try:
        for p in check:
            xstool.valid(p)
    except xstool.ToolError as e:
        fail(str(e), e.status)
    path = xenstore_path(explicit_path)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)   # `| head` ends us quietly, as it does the C tools
    try:
        return xstool.run(path, lambda xs: action(xs, *args))
    except xstool.ToolError as e:
        fail(str(e), e.status)


def paths_argument(required=True):
    return click.argument("paths", nargs=-1, required=required, metavar="PATH..." if required else "[PATH]...")


def stdout():
    return click.get_binary_stream("stdout")


@xenstore_tools.command("read")
@xenstore_option
@click.option("-R", "--raw", is_flag=True, help="Print the value's bytes alone, with no newline after it.")
@paths_argument()
def xenstore_read(explicit_path, raw, paths):
    """Print the value of each PATH, as it is, one a line (in one transaction)."""
    default_signals()
    tool(explicit_path, "read", (paths, stdout(), raw), paths)


@xenstore_tools.command("write", context_settings={"ignore_unknown_options": True,
                                                   "allow_interspersed_args": False})
@xenstore_option
@click.argument("args", nargs=-1, required=True, metavar="PATH VALUE...")
def xenstore_write(explicit_path, args):
    """Write each VALUE, as it is, to its PATH (several: all in one transaction)."""
    default_signals()
    for p in args[::2]:
        if p.startswith("-"):
            fail("no such option: %s (see 'xe-guest-agent xenstore write --help')" % p)
    if len(args) % 2:
        fail("%s has no VALUE: give PATH VALUE pairs (see 'xe-guest-agent xenstore write --help')" % args[-1])
    pairs = [(p, os.fsencode(v)) for p, v in zip(args[::2], args[1::2])]
    tool(explicit_path, "write", (pairs,), args[::2])


@xenstore_tools.command("rm")
@xenstore_option
@paths_argument()
def xenstore_rm(explicit_path, paths):
    """Remove each PATH and everything below it (several: in one transaction)."""
    default_signals()
    tool(explicit_path, "rm", (paths,), paths)


@xenstore_tools.command("ls")
@xenstore_option
@click.option("-r", "--recursive", is_flag=True, help="Every node below, as a path relative to PATH.")
@paths_argument(required=False)
def xenstore_ls(explicit_path, recursive, paths):
    """Print the children of each PATH (default: the guest's home), one a line."""
    default_signals()
    tool(explicit_path, "ls", (paths, stdout(), recursive), paths)


@xenstore_tools.command("exists")
@xenstore_option
@paths_argument()
def xenstore_exists(explicit_path, paths):
    """Exit 0 if every PATH exists, 1 if one does not (printing nothing)."""
    default_signals()
    if not tool(explicit_path, "exists", (paths,), paths):
        sys.exit(RUNTIME)


@xenstore_tools.command("watch")
@xenstore_option
@click.option("-n", "--number", "count", type=click.IntRange(1), metavar="N", help="Stop after N events.")
@paths_argument()
def xenstore_watch(explicit_path, count, paths):
    """Print the path of each change at or below each PATH, one a line, until SIGINT or SIGTERM
    (exit 0) or N events. xenstored fires a watch once when it is set: that is the first line."""
    tool(explicit_path, "watch", (paths, stdout(), count), paths)

#!/usr/bin/python3 -s
# /usr/bin/xe-guest-agent as installed by the deb and the rpm. The agent is an application, not a
# library: it lives in a private directory together with the pure-Python dependencies the
# distribution lacks (vendored; see packaging/README.md), so nothing of ours lands in the shared
# Python path and nothing can clash with a distribution package added later.
import sys

sys.path[0] = "/usr/share/xe-guest-agent"   # instead of this script's own folder (/usr/bin)

from xe_guest_agent.cli import main  # noqa: E402

sys.exit(main())

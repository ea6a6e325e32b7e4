# Packages: `make deb` -> dist/xe-guest-agent_<version>_all.deb (needs debhelper, dh-python),
#           `make rpm` -> dist/xe-guest-agent-<version>-<release>.noarch.rpm (needs rpm/rpmbuild).
# Each build runs in a throw-away copy of the tree under $(TMPDIR): nothing is written into the
# checkout except dist/. The version is xe_guest_agent/__init__.py's __version__.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
TMPDIR ?= /tmp
VERSION := $(shell sed -n 's/^__version__ *= *["'\'']\([^"'\'']*\)["'\''].*/\1/p' xe_guest_agent/__init__.py)
RELEASE ?= 1
DEB := dist/xe-guest-agent_$(VERSION)_all.deb
RPM := dist/xe-guest-agent-$(VERSION)-$(RELEASE).noarch.rpm
# rpmbuild checks BuildRequires against the rpm database, which is empty on a Debian host.
RPMBUILD_FLAGS ?= $(if $(wildcard /var/lib/dpkg/status),--nodeps)

# Copy the source tree (no VCS data, caches or build output) to the directory $(1).
copy_tree = mkdir -p $(1) && tar -c --exclude-vcs --exclude=./dist --exclude=./build --exclude=./.cache \
	--exclude=__pycache__ --exclude='*.pyc' --exclude=.pytest_cache --exclude='*.egg-info' --exclude='./.venv*' \
	-f - . | tar -x -C $(1)

.PHONY: all deb rpm clean check venv bench
all: deb rpm

# The test suite, with what it needs (it fetches a real xenstored into .cache/ on first use). As
# root on Debian or Ubuntu it installs the system packages first. PEP 668 forbids pip outside a
# venv, so it makes $(VENV) with $(PYTHON), installs .[test] there (editable: edits need no
# reinstall) and runs pytest in it. Another interpreter: make check PYTHON=python3.6 VENV=.venv-3.6
# `make venv` alone: the agent from source, as $(VENV)/bin/xe-guest-agent.
PYTHON ?= python3
VENV ?= .venv
TEST_DEBS := gcc libc6-dev iproute2 util-linux strace

# $(1): Debian packages to install, as root with apt-get, if any is missing (else nothing).
apt_install = if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	missing=; for p in $(1); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q ' installed$$' || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "make: apt-get install$$missing"; apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; fi; \
	fi

check: $(VENV)/.installed
	@$(call apt_install,$(TEST_DEBS))
	$(VENV)/bin/python3 -m pytest $(PYTEST_ARGS)

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@$(call apt_install,python3-venv)
	[ -x $(VENV)/bin/python3 ] || $(PYTHON) -m venv $(VENV)
	@# Editable installs of a pyproject.toml project need pip 21.3 (3.6's venv brings 18.1).
	$(VENV)/bin/python3 -c 'import pip, sys; sys.exit(tuple(map(int, pip.__version__.split(".")[:2])) < (21, 3))' || \
		$(VENV)/bin/python3 -m pip install -q "pip>=21.3,<22"
	$(VENV)/bin/python3 -m pip install -q -e '.[test]'
	touch $@

# The benchmark (tests/bench/bench.py, about 2.5 minutes), in the suite's venv, with the same system
# packages. BENCH_ARGS='--idle 120' passes options; it exits 1 if a target is missed.
bench: $(VENV)/.installed
	@$(call apt_install,$(TEST_DEBS))
	$(VENV)/bin/python3 -m tests.bench.bench $(BENCH_ARGS)

deb:
	@test -n "$(VERSION)" || { echo "make: no __version__ in xe_guest_agent/__init__.py" >&2; exit 1; }
	@command -v dpkg-buildpackage >/dev/null && command -v dh >/dev/null || \
		{ echo "make deb: needs build-essential, debhelper and dh-python (apt-get install build-essential debhelper dh-python)" >&2; exit 1; }
	@work=$$(mktemp -d "$(TMPDIR)/xe-guest-agent-deb.XXXXXX"); trap 'rm -rf "$$work"' EXIT; \
	src="$$work/xe-guest-agent-$(VERSION)"; \
	$(call copy_tree,"$$src"); \
	cp -r packaging/debian "$$src/debian"; \
	cp packaging/xe-guest-agent.service "$$src/debian/xe-guest-agent.service"; \
	top=$$(dpkg-parsechangelog -l "$$src/debian/changelog" -S Version); \
	if [ "$$top" != "$(VERSION)" ]; then \
		echo "make deb: debian/changelog is at $$top, adding an entry for $(VERSION) in the build copy" >&2; \
		{ printf 'xe-guest-agent (%s) unstable; urgency=medium\n\n  * Upstream version %s.\n\n -- %s  %s\n\n' \
			"$(VERSION)" "$(VERSION)" "xe-guest-agent maintainers <maintainers@xe-guest-agent.org>" "$$(date -R)"; \
		  cat "$$src/debian/changelog"; } > "$$work/changelog" && mv "$$work/changelog" "$$src/debian/changelog"; \
	fi; \
	echo "building $(DEB) in $$src"; \
	(cd "$$src" && dpkg-buildpackage -b -us -uc --no-sign) > "$$work/build.log" 2>&1 || \
		{ tail -n 60 "$$work/build.log" >&2; echo "make deb: dpkg-buildpackage failed" >&2; exit 1; }; \
	mkdir -p dist && cp "$$work/xe-guest-agent_$(VERSION)_all.deb" $(DEB); \
	ls -l $(DEB)

rpm:
	@test -n "$(VERSION)" || { echo "make: no __version__ in xe_guest_agent/__init__.py" >&2; exit 1; }
	@command -v rpmbuild >/dev/null || { echo "make rpm: needs rpmbuild (apt-get install rpm / dnf install rpm-build)" >&2; exit 1; }
	@work=$$(mktemp -d "$(TMPDIR)/xe-guest-agent-rpm.XXXXXX"); trap 'rm -rf "$$work"' EXIT; \
	mkdir -p "$$work"/{BUILD,BUILDROOT,RPMS,SOURCES,SPECS,SRPMS}; \
	$(call copy_tree,"$$work/xe-guest-agent-$(VERSION)"); \
	tar -C "$$work" -czf "$$work/SOURCES/xe-guest-agent-$(VERSION).tar.gz" "xe-guest-agent-$(VERSION)"; \
	echo "building $(RPM) in $$work"; \
	HOME="$$work" rpmbuild -bb $(RPMBUILD_FLAGS) --define "_topdir $$work" --define "_tmppath $$work/tmp" \
		--define "agent_version $(VERSION)" --define "agent_release $(RELEASE)" \
		packaging/rpm/xe-guest-agent.spec > "$$work/build.log" 2>&1 || \
		{ tail -n 60 "$$work/build.log" >&2; echo "make rpm: rpmbuild failed" >&2; exit 1; }; \
	mkdir -p dist && cp "$$work/RPMS/noarch/xe-guest-agent-$(VERSION)-$(RELEASE).noarch.rpm" $(RPM); \
	ls -l $(RPM)

clean:
	rm -rf dist

# The real Xen host (tests/xen/README.md): Xen 4.17 under QEMU with the packaged agent in a guest.
# xen-test: every scenario, on oxenstored and the C xenstored side by side (~28-33 min on 2 cores from scratch).
# xen-demo: the host's view, the flag flipped (~11 min from scratch, 5.5 with the images cached; .ci/run runs it).
# xen-boots: the guest booted 10 times in a row on oxenstored, each timed to its first publish (~30 min cached).
.PHONY: xen-test xen-demo xen-boots
xen-test:
	tests/xen/xen-test.sh

xen-demo:
	MODE=demo tests/xen/xen-test.sh oxenstored

xen-boots:
	MODE=boots BOOTS=$${BOOTS:-10} tests/xen/xen-test.sh oxenstored

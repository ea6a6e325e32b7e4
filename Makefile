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

.PHONY: all deb rpm clean check bench
all: deb rpm

# The test suite (a real xenstored is fetched into .cache/ on first use) and the benchmark.
check:
	python3 -m pytest

bench:
	python3 -m tests.bench.bench

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

#!/bin/sh
# Re-create this folder's copies from PyPI, pinned by hash (run by hand when bumping a version;
# the package builds never touch the network). Usage: sh packaging/vendor/update.sh
set -eu
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cat > "$tmp/req.txt" <<'REQ'
inotify-simple==2.0.1 --hash=sha256:e5da495f2064889f8e68b67f9358b0d102e03b783c2d42e5b8e132ab859a5d8a
pyxs==0.4.1 --hash=sha256:ae6016b05e7a99d0a4e8b3eb83bbc32362d1b013498d64c5fb1b429f43bb049f
REQ
python3 -m pip download --quiet --no-deps --only-binary=:all: --require-hashes -r "$tmp/req.txt" -d "$tmp"
cd "$tmp"
python3 -m zipfile -e inotify_simple-*.whl ino
python3 -m zipfile -e pyxs-*.whl pyxs
cp ino/inotify_simple.py "$here/"
cp ino/inotify_simple-*.dist-info/licenses/LICENSE "$here/LICENSE.inotify_simple"
rm -rf "$here/pyxs" && mkdir "$here/pyxs" && cp pyxs/pyxs/*.py "$here/pyxs/"
# The pyxs wheel carries no license file: its license is LGPL-3.0-or-later, which incorporates GPL-3.0.
if [ -r /usr/share/common-licenses/LGPL-3 ]; then
    { cat /usr/share/common-licenses/LGPL-3; printf '\n\n'; cat /usr/share/common-licenses/GPL-3; } > "$here/LICENSE.pyxs"
fi
echo "vendored: $(ls "$here")"

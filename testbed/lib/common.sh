# SPDX-License-Identifier: GPL-2.0
# testbed/lib/common.sh: shared helpers for the host-side testbed scripts
# (setup, kernel builds, VM runner). Sourced, never executed.

TESTBED_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOP_DIR=$(cd "$TESTBED_DIR/.." && pwd)
# Build products live outside the source tree's tracked files.
BUILD_DIR=${IPVSBPF_BUILD_DIR:-$TOP_DIR/build}
# The compiler cache is shared by every clone on the machine (a fresh CI
# clone then rebuilds kernels from cache); it only ever saves time.
CCACHE_DIR=${CCACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ipvs-bpf/ccache}

# list_executables KIND: name and path of each KIND target ("test",
# "bench") that cargo built, from its --message-format=json on stdin.
list_executables() {
	/usr/bin/python3 -c '
import json, sys
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("reason") == "compiler-artifact" and msg.get("executable") \
            and sys.argv[1] in msg["target"]["kind"]:
        print(msg["target"]["name"], msg["executable"])
' "$1"
}

log() { printf '[testbed] %s\n' "$*" >&2; }
die() { printf '[testbed] error: %s\n' "$*" >&2; exit 1; }

# The installed Debian 6.12 kernel release (e.g. 6.12.57+deb12-amd64),
# derived from the linux-image-amd64 metapackage's dependency, never
# hard-coded: Debian moves it with every point release.
debian_kernel_version() {
	local dep
	dep=$(dpkg-query -W -f='${Depends}' linux-image-amd64 2>/dev/null |
		tr ',' '\n' | sed -n 's/^ *linux-image-\([^ ]*\).*/\1/p' | head -n1)
	dep=${dep%-unsigned}
	[ -n "$dep" ] && echo "$dep"
}

debian_kernel_image() {
	echo "/boot/vmlinuz-$(debian_kernel_version)"
}

# The linux-source-6.12 tarball shipped by Debian.
debian_source_tarball() {
	local t
	for t in /usr/src/linux-source-6.12.tar.xz /usr/src/linux-source-6.12.tar.bz2; do
		[ -f "$t" ] && { echo "$t"; return 0; }
	done
	return 1
}

# debian_objtree OBJ SRCTREE: make OBJ a kbuild objtree for building
# modules of SRCTREE against the installed Debian 6.12 kernel: Debian's
# build directory (generated headers, .config, Module.symvers, host tools)
# by symlinks, remade when that kernel changes, with a top Makefile that
# makes SRCTREE the srctree.
debian_objtree() {
	local obj=$1 src=$2 kver headers
	kver=$(debian_kernel_version) || die "no Debian 6.12 kernel installed; run testbed/setup"
	headers=/usr/src/linux-headers-$kver
	[ -f "$headers/Makefile" ] || die "$headers missing; install linux-headers-amd64 from bookworm-backports"
	if [ ! -f "$obj/.ipvsbpf-objtree" ] ||
		[ "$(readlink "$obj/Module.symvers")" != "$headers/Module.symvers" ]; then
		rm -rf "$obj"
		mkdir -p "$obj"
		cp -rs "$headers/." "$obj/"
		echo "$headers" >"$obj/.ipvsbpf-objtree"
	fi
	rm -f "$obj/Makefile"
	printf 'include %s/Makefile\n' "$src" >"$obj/Makefile"
}

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
# Paths under the clone are hashed relative to it, and the working
# directory not at all, so another clone's objects are hits. (Debug info
# then names the clone that compiled first; nothing here debugs with it.)
export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$TOP_DIR}
export CCACHE_NOHASHDIR=${CCACHE_NOHASHDIR:-true}

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

# The Debian kernel the testbed uses is pinned in testbed/kernel.pin
# (suite, package version, ABI); see there for why and how to move it.
# shellcheck source=testbed/kernel.pin
. "$TESTBED_DIR/kernel.pin"

# The packages that make up the pinned kernel: the image the guest boots,
# the headers the patched modules build against, the source the series
# applies to.
kernel_pin_packages() {
	echo "linux-image-$KERNEL_ABI linux-headers-$KERNEL_ABI linux-source-6.12"
}

# kernel_pin_problems: one line per pinned package that is missing or at
# another version; nothing when the machine has exactly the pinned kernel.
kernel_pin_problems() {
	local p v
	for p in $(kernel_pin_packages); do
		v=$(dpkg-query -W -f='${Status} ${Version}' "$p" 2>/dev/null) || v=
		case "$v" in
		# "hold ok installed": testbed/setup holds linux-source-6.12
		*" ok installed $KERNEL_DEB_VERSION") ;;
		*" ok installed "*) echo "$p is at ${v##* }, testbed/kernel.pin wants $KERNEL_DEB_VERSION" ;;
		*) echo "$p is not installed (testbed/kernel.pin wants $KERNEL_DEB_VERSION from $KERNEL_SUITE)" ;;
		esac
	done
}

# The pinned Debian 6.12 kernel release (e.g. 6.12.118+deb12-amd64), after
# checking that exactly the pinned packages are installed: a build against
# anything else fails here, naming the step that fixes it.
debian_kernel_version() {
	local problems
	problems=$(kernel_pin_problems)
	if [ -n "$problems" ]; then
		printf '[testbed] %s\n' "$problems" >&2
		printf '[testbed] run testbed/setup to install the kernel in testbed/kernel.pin\n' >&2
		return 1
	fi
	echo "$KERNEL_ABI"
}

debian_kernel_image() {
	echo "/boot/vmlinuz-$KERNEL_ABI"
}

# The linux-source-6.12 tarball shipped by Debian, at the pinned version.
debian_source_tarball() {
	local t
	debian_kernel_version >/dev/null || return 1
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
	[ -f "$headers/Makefile" ] || die "$headers missing; run testbed/setup (testbed/kernel.pin)"
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

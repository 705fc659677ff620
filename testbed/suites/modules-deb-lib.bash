# SPDX-License-Identifier: GPL-2.0
# testbed/suites/modules-deb-lib.bash: what modules-deb and
# modules-deb-remove share (sourced after lib.sh): the package built by
# packaging/build-modules-deb for the running kernel, and helpers.
kver=$(uname -r)
kdir=/lib/modules/$kver
pkg=ipvs-bpf-modules-$kver
debs=("$TOP"/build/packages/"$pkg"_*_amd64.deb)
[ -f "${debs[0]}" ] || fail "no $pkg package in build/packages (run packaging/build-modules-deb)"
[ "${#debs[@]}" = 1 ] || fail "${#debs[@]} $pkg packages in build/packages: which one?"
deb=${debs[0]}
# where modules-deb puts the staged modules aside
saved=/run/ipvsbpf-staged-updates

# ip_vs_path: where modprobe finds ip_vs now.
ip_vs_path() { modinfo -n ip_vs; }

# reload_ipvs: unload every ip_vs module and load ip_vs as modprobe finds it.
reload_ipvs() {
	unload_ipvs || fail "cannot unload IPVS: $(lsmod | awk '$1 ~ /^ip_vs/ { print $1 }' | xargs)"
	modprobe ip_vs || fail "modprobe ip_vs"
}

tmp=$(mktemp -d)

# timed CMD...: run CMD, print how long it took (dpkg's database and
# depmod over the 9p root are the slow part under TCG).
timed() {
	local t0=$SECONDS rc=0
	"$@" >"$tmp/out" 2>&1 || rc=$?
	sed 's/^/      /' "$tmp/out" | tail -5
	echo "      ($*: exit $rc after $((SECONDS - t0)) s)"
	return "$rc"
}

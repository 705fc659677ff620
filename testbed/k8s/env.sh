# SPDX-License-Identifier: GPL-2.0
# testbed/k8s/env.sh: what the Kubernetes scripts share (sourced): where
# Go, its caches and the built components live, and the components' list.

K8S_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# Every clone on the machine shares one cache (a fresh CI clone reuses
# the binaries, the module downloads and Go's build cache).
K8S_CACHE=${IPVSBPF_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ipvs-bpf/k8s}
export GOMODCACHE=${K8S_GOMODCACHE:-$K8S_CACHE/go/mod}
export GOCACHE=${K8S_GOCACHE:-$K8S_CACHE/go/build}
export GOPATH=$K8S_CACHE/go/path
export GOFLAGS="-modcacherw -buildvcs=false"
export CGO_ENABLED=0
export GOTELEMETRY=off

# The packages go.mod lists as tools, and the binary each becomes.
K8S_TOOLS="go.etcd.io/etcd/server/v3
k8s.io/kubernetes/cmd/kube-apiserver
k8s.io/kubernetes/cmd/kube-controller-manager
k8s.io/kubernetes/cmd/kube-proxy
k8s.io/kubernetes/cmd/kubectl"

k8s_log() { printf '[k8s] %s\n' "$*" >&2; }
k8s_die() { printf '[k8s] error: %s\n' "$*" >&2; exit 1; }

# k8s_bin_name PKG: the binary a tool package builds.
k8s_bin_name() {
	case $1 in
	go.etcd.io/etcd/server/*) echo etcd ;;
	*) echo "${1##*/}" ;;
	esac
}

# k8s_go: the Go to start from: /usr/local/go (the build machines'), else
# `go` on PATH, else Debian's newest golang-1.2x (testbed/setup installs
# one from bookworm-backports when there is no Go at all).
k8s_go() {
	local g
	for g in /usr/local/go/bin/go "$(command -v go 2>/dev/null)" \
		$(ls -d /usr/lib/go-1.2[0-9]/bin/go 2>/dev/null | sort -rV); do
		[ -n "$g" ] && [ -x "$g" ] && { echo "$g"; return 0; }
	done
	return 1
}

# k8s_need_go: put that Go on PATH. A Go older than go.mod's `go` line
# switches itself to that release, fetched once through the Go module
# proxy into the module cache (GOTOOLCHAIN=auto; Debian's Go defaults to
# local).
k8s_need_go() {
	local g
	g=$(k8s_go) || k8s_die "no Go toolchain to build Kubernetes with; run testbed/setup (it installs one)"
	PATH=$(dirname "$g"):$PATH
	export PATH
	export GOTOOLCHAIN=${GOTOOLCHAIN:-auto}
	(cd "$K8S_DIR" && go version >/dev/null 2>&1) ||
		k8s_die "$g cannot provide the Go release testbed/k8s/go.mod needs ($(k8s_go_min)); run testbed/setup"
}

# The minimum Go release go.mod asks for, as a GOTOOLCHAIN name.
k8s_go_min() {
	echo "go$(sed -n 's/^go //p' "$K8S_DIR/go.mod")"
}

# The Kubernetes release pinned in go.mod (the one place it lives).
k8s_version() {
	sed -n 's|^[[:space:]]*\(require \)\{0,1\}k8s.io/kubernetes v\([^ ]*\).*|\2|p' "$K8S_DIR/go.mod"
}

# The etcd server release that go.mod resolves to.
k8s_etcd_version() {
	(cd "$K8S_DIR" && go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)
}

# Where the binaries of the pinned version are cached: keyed by the
# version and the hash of go.sum (and Go's own version), so a different
# pin or a changed dependency never reuses a stale build.
k8s_bin_dir() {
	local key
	key=$(cat "$K8S_DIR/go.mod" "$K8S_DIR/go.sum" | sha256sum | cut -c1-12)
	echo "$K8S_CACHE/bin/v$(k8s_version)-$key"
}

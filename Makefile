# ipvs-bpf: top-level entry points. `make demo` and `make test` do all
# set-up themselves on a fresh Debian bookworm machine (as root).

SHELL := /bin/bash
export PATH := $(CURDIR)/.venv/bin:$(HOME)/.cargo/bin:$(PATH)

.PHONY: all demo test setup build lint kernel-tree kernel-modules modules-deb bindeb-pkg kernel-full \
	kernel-debug kernel-check datapath netlink proxy proxy-bin bench bench-all bench-icount bench-scale bench-quick bench-profile bench-snat bench-netlink \
	bench-proxy vm-full vm-debug \
	clean distclean
.PHONY: demo-k8s k8s test-k8s

all: build

## demo: boot Debian's 6.12 with the patched IPVS in QEMU; ipvsbpf-proxy (ipvs-bpf mode) serves Services
demo: setup kernel-modules proxy-bin
	testbed/demo

## demo-k8s: the same proxy driven by kubectl apply through a real kube-apiserver (DIR=... applies your manifests)
demo-k8s: setup kernel-modules proxy-bin k8s
	testbed/demo-k8s $(DIR)

## test-k8s: suite proxy-k8s alone, kube-proxy in all three modes (~12 min under TCG);
## make test runs it with kube-proxy's ipvs mode only
test-k8s: setup kernel-modules proxy k8s
	testbed/vm-run --timeout 3000 --memory 4G --suite-timeout 2700 proxy-k8s

## k8s: etcd, kube-apiserver, kube-controller-manager, kube-proxy, kubectl from their Go modules (cached in ~/.cache/ipvs-bpf/k8s)
k8s:
	testbed/k8s/build

## test: cargo checks and tests, testbed unit tests, guest suites; ends with a summary
test:
	testbed/test-all

setup:
	testbed/setup

build:
	cargo build --workspace --locked

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

kernel-tree:
	testbed/kernel-tree

## kernel-modules: net/netfilter/ipvs from the patched tree, for Debian's 6.12 (fast, CI)
kernel-modules:
	testbed/build-modules

## modules-deb: those modules as a Debian package for the pinned kernel ABI -> build/packages
modules-deb: kernel-modules
	packaging/build-modules-deb

## bindeb-pkg: the whole patched kernel as Debian packages (linux-image, linux-headers,
## and -dbg with DWARF) -> build/packages. KERNEL_CONFIG=debian (default: Debian's own
## config of the pinned kernel; hours on 2 cores) or testbed (the testbed's config, ~25 min)
KERNEL_CONFIG ?= debian
bindeb-pkg: setup
	packaging/build-kernel-deb $(KERNEL_CONFIG)

## kernel-full / kernel-debug: whole bzImages from the patched tree
kernel-full:
	testbed/build-kernel full

kernel-debug:
	testbed/build-kernel debug

## datapath: the ipvsbpf-datapath tool and the datapath tests, built for the guest
datapath:
	testbed/build-datapath

## netlink: the ipvs-netlink kernel tests and benchmark, built for the guest (suite netlink)
netlink:
	testbed/build-netlink

## proxy: the ipvsbpf-proxy binary (release) and its kernel tests, built for the guest (suites proxy*)
proxy:
	testbed/build-proxy

## proxy-bin: the ipvsbpf-proxy binary alone (what the demos and the benchmarks run)
proxy-bin:
	testbed/build-proxy --bin

## bench: the data-plane comparison in the guest: direct, the real kube-proxy's ipvs mode,
## ipvsbpf-proxy's ipvs and ipvs-bpf modes on NodePort and ClusterIP, short/keep-alive/iperf3,
## 5 interleaved rounds (~25 min warm, ~32 from nothing built) -> build/bench/latest
bench: setup kernel-modules proxy-bin k8s
	testbed/bench

## bench-all: the same with kube-proxy's iptables and nftables modes too (~45 min)
bench-all: setup kernel-modules proxy-bin k8s
	testbed/bench --all-modes

## bench-icount: the same cells counted in instructions (QEMU -icount, 1 vCPU,
## a fixed number of requests), 3 rounds -> build/bench/<run>-icount
bench-icount: setup kernel-modules proxy-bin k8s
	testbed/bench --icount

## bench-scale: the counted cells of direct, kube-proxy's iptables and nftables modes and
## ipvsbpf-proxy's two modes with 0, 1,000 and 10,000 other Services present, short and
## keep-alive, 1 round
bench-scale: setup kernel-modules proxy-bin k8s
	testbed/bench --icount --others "0 1000 10000" \
		--modes "direct kube-proxy-iptables kube-proxy-nftables ipvs ipvs-bpf" \
		--workloads "short ka" --rounds 1

## bench-quick: the same harness, one round of short connections (what make test checks)
bench-quick: setup kernel-modules proxy-bin
	testbed/bench --quick

## bench-profile: where the instructions go: counted cells of direct, ipvs and ipvs-bpf
## with perf sampling every 20,000 instructions, by symbol -> build/bench/<run>/profile.md
bench-profile: setup kernel-modules proxy-bin
	testbed/bench --profile 20000 --modes "direct ipvs ipvs-bpf" --workloads "short ka" --rounds 1

## bench-snat: the SNAT programs' micro-benchmark (root; ns/packet by path, program size)
bench-snat:
	cargo bench --locked -p ipvsbpf-proxy --bench snat

## bench-netlink: ipvs-netlink against ipvsadm -R at 1,000 and 10,000 services, in the guest
bench-netlink: setup kernel-modules netlink
	testbed/vm-run --timeout 2400 netlink-bench

## bench-proxy: the control plane at 1,000 and 10,000 Services in the guest: ipvsbpf-proxy's two
## modes from files, then beside the real kube-proxy through the real kube-apiserver (~45 min)
bench-proxy: setup kernel-modules proxy-bin k8s
	testbed/bench-proxy

## vm-full / vm-debug: the guest suites on a whole patched kernel
vm-full: kernel-full datapath netlink
	testbed/vm-run --kernel full --timeout 1800 clean ipvs-selftest ipvs-bpf-selftest stress smoke datapath netlink

# (the debug kernel makes about 370 connections a minute per stream in
# ipvs_bpf.sh's port reuse case: a range of 100 ports still runs out)
vm-debug: kernel-debug datapath netlink
	testbed/vm-run --kernel debug --timeout 5400 --env IPVS_BPF_REUSE_PORTS=100 \
		clean ipvs-selftest ipvs-bpf-selftest stress smoke datapath netlink

## kernel-check: checkpatch --strict on every patch, every prefix builds as modules and built in
kernel-check:
	testbed/check-series

clean:
	cargo clean
	rm -rf build/vm build/modules build/kobj-*

distclean: clean
	rm -rf build .venv

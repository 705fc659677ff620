#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0
"""testbed/proxy-bench-manifests.py: manifests for the proxy's control-plane
benchmark (suite proxy-bench), read by ipvsbpf-proxy --source file.

    proxy-bench-manifests.py --services N --endpoints E --out DIR
                             [--chunk 1000] [--format json|yaml] [--node-ip IP]
                             [--first-vip IP]
    proxy-bench-manifests.py --change-only --extra K --endpoints E --out DIR
    proxy-bench-manifests.py --for-api --services N --endpoints E --out DIR

The first form fills DIR (new or empty) with N ClusterIP Services, TCP port
80, and one EndpointSlice each with E ready endpoints on `node` and `node2`
in turn, plus the Node object of `node`:

    node.yaml             the Node `node`, InternalIP --node-ip
    services-NNN.json     --chunk Services per file (`kind: List`)
    slices-NNN.json       --chunk EndpointSlices per file, but service 0's
    change.yaml           service 0's EndpointSlice alone, so that the
                          benchmark rewrites one small file per change

The second form rewrites only change.yaml: service 0's slice with its E
endpoints plus K extra ones, the K-th new. Files are written under a hidden
name and renamed, so a polling proxy never reads half a file.

Addresses: Service i has cluster IP 198.19.0.0 + i + 1 (198.19.0.1 up), or
--first-vip + i (the data-plane benchmark keeps its own Service's
198.19.0.20 out of the way).
Endpoints come from 198.18.0.0 to 198.18.254.254 (no .0, no .255), endpoint
j of service i at index i*E + j, wrapping after 64,770 addresses: unique
within each Service, shared across Services beyond 6,477 of them at E=10,
as pods backing several Services are. The extra endpoints of the second form
are 198.18.255.K, outside that range. None of them needs to exist.

With --for-api the objects are for a real API server (testbed/k8s/seed
creates them there): namespace.json holds the Namespace; Services have no
selector and their slices are managed by `ipvsbpf-bench.testbed` (the
EndpointSlice controller leaves both alone, as it does for any
selectorless Service); service 0's slice is among the others (a benchmark
changes it through the API); there is no node.yaml (the suite registers
its nodes) and cluster IPs start one further, at 198.19.0.2 (198.19.0.1
is the `kubernetes` Service's).

Prints `vip0=...` (service 0's cluster IP), and with --change-only
`added=...` (the new endpoint's address), for the benchmark to poll.
"""

import argparse
import ipaddress
import json
import os
import sys

NAMESPACE = "bench"
PORT = 80
VIP_BASE = ipaddress.IPv4Address("198.19.0.0")
EP_THIRD_OCTETS = 255  # 198.18.0.x .. 198.18.254.x
EP_HOSTS = 254  # .1 .. .254
EP_SPACE = EP_THIRD_OCTETS * EP_HOSTS
EXTRA_MAX = 254  # 198.18.255.1 .. .254
NODES = ("node", "node2")
# --for-api (see the docstring)
FOR_API = False
API_MANAGER = "ipvsbpf-bench.testbed"


def svc_name(i):
    return f"svc-{i:05d}"


FIRST_VIP = None


def vip(i):
    if FIRST_VIP is not None:
        return str(FIRST_VIP + i)
    return str(VIP_BASE + i + (2 if FOR_API else 1))


def endpoint_ip(idx):
    idx %= EP_SPACE
    return f"198.18.{idx // EP_HOSTS}.{idx % EP_HOSTS + 1}"


def extra_ip(k):
    return f"198.18.255.{k}"


def service(i):
    name = svc_name(i)
    spec = {
        "type": "ClusterIP",
        "selector": {"app": name},
        "clusterIP": vip(i),
        "clusterIPs": [vip(i)],
        "ports": [{"name": "http", "protocol": "TCP", "port": PORT, "targetPort": PORT}],
    }
    if FOR_API:
        del spec["selector"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": spec,
    }


def endpoint(addr, j):
    return {
        "addresses": [addr],
        "conditions": {"ready": True, "serving": True, "terminating": False},
        "nodeName": NODES[j % len(NODES)],
    }


def endpoint_slice(i, e, extra=0):
    name = svc_name(i)
    eps = [endpoint(endpoint_ip(i * e + j), j) for j in range(e)]
    eps += [endpoint(extra_ip(k), e + k - 1) for k in range(1, extra + 1)]
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{name}-1",
            "namespace": NAMESPACE,
            "labels": {
                "kubernetes.io/service-name": name,
                "endpointslice.kubernetes.io/managed-by": API_MANAGER if FOR_API
                else "endpointslice-controller.k8s.io",
            },
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "protocol": "TCP", "port": PORT}],
        "endpoints": eps,
    }


def node(ip):
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "node", "labels": {"kubernetes.io/hostname": "node"}},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": ip},
                {"type": "Hostname", "address": "node"},
            ]
        },
    }


def to_yaml(obj, indent=0):
    """Block YAML for the dicts, lists and scalars above (JSON scalars are
    valid YAML scalars; strings are quoted so none reads as a number)."""
    pad = "  " * indent
    lines = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, (dict, list)) and v:
                lines.append(f"{pad}{k}:")
                lines.append(to_yaml(v, indent + 1))
            else:
                lines.append(f"{pad}{k}: {json.dumps(v)}")
    else:
        for v in obj:
            if isinstance(v, (dict, list)) and v:
                inner = to_yaml(v, indent + 1)
                lines.append(f"{pad}- {inner.lstrip()}")
            else:
                lines.append(f"{pad}- {json.dumps(v)}")
    return "\n".join(lines)


def write(path, text):
    d, base = os.path.split(path)
    tmp = os.path.join(d, f".{base}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def write_objects(path, objs, fmt):
    if fmt == "json":
        write(path, json.dumps({"apiVersion": "v1", "kind": "List", "items": objs}, separators=(",", ":")) + "\n")
    else:
        write(path, "".join(f"---\n{to_yaml(o)}\n" for o in objs))


def write_change(out, e, extra):
    write(os.path.join(out, "change.yaml"), to_yaml(endpoint_slice(0, e, extra)) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--services", type=int, help="N: how many Services")
    ap.add_argument("--endpoints", type=int, required=True, help="E: ready endpoints per Service")
    ap.add_argument("--out", required=True, help="manifest directory")
    ap.add_argument("--chunk", type=int, default=1000, help="objects per file (1000)")
    ap.add_argument("--format", choices=("json", "yaml"), default="json",
                    help="services and slices files: JSON `kind: List` (default) or multi-document YAML")
    ap.add_argument("--node-ip", default="192.0.2.1", help="InternalIP of the Node `node`")
    ap.add_argument("--change-only", action="store_true", help="rewrite change.yaml only")
    ap.add_argument("--for-api", action="store_true", help="objects for a real API server (see above)")
    ap.add_argument("--extra", type=int, default=0, help="with --change-only: extra endpoints of service 0")
    ap.add_argument("--first-vip", type=ipaddress.IPv4Address,
                    help="service 0's cluster IP (the others follow); in 198.19.0.0/16")
    a = ap.parse_args()
    global FOR_API, FIRST_VIP
    FOR_API = a.for_api
    FIRST_VIP = a.first_vip
    if FOR_API and a.change_only:
        ap.error("--for-api objects change through the API, not change.yaml")

    if a.endpoints < 1 or a.endpoints > EP_SPACE:
        ap.error(f"--endpoints must be 1..{EP_SPACE}")
    if not 0 <= a.extra <= EXTRA_MAX:
        ap.error(f"--extra must be 0..{EXTRA_MAX}")
    if a.change_only:
        if not os.path.isfile(os.path.join(a.out, "change.yaml")):
            ap.error(f"{a.out} holds no change.yaml (generate it first)")
        write_change(a.out, a.endpoints, a.extra)
        print(f"vip0={vip(0)}")
        if a.extra:
            print(f"added={extra_ip(a.extra)}")
        return 0

    most = 65533 if FOR_API else 65534
    if FIRST_VIP is not None:
        if FIRST_VIP not in ipaddress.IPv4Network("198.19.0.0/16"):
            ap.error("--first-vip must be in 198.19.0.0/16")
        most = int(VIP_BASE) + 65534 - int(FIRST_VIP) + 1
    if a.services is None or not 1 <= a.services <= most:
        ap.error(f"--services must be 1..{most} (198.19.0.0/16)")
    if a.chunk < 1 or a.extra:
        ap.error("--chunk must be positive; --extra goes with --change-only")
    os.makedirs(a.out, exist_ok=True)
    if os.listdir(a.out):
        ap.error(f"{a.out} is not empty")

    ext = a.format
    if FOR_API:
        ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
        write(os.path.join(a.out, "namespace.json"), json.dumps(ns) + "\n")
    else:
        write(os.path.join(a.out, "node.yaml"), to_yaml(node(a.node_ip)) + "\n")
    for c, start in enumerate(range(0, a.services, a.chunk)):
        ids = range(start, min(start + a.chunk, a.services))
        write_objects(os.path.join(a.out, f"services-{c:03d}.{ext}"), [service(i) for i in ids], ext)
        slices = [endpoint_slice(i, a.endpoints) for i in ids if FOR_API or i != 0]
        if slices:
            write_objects(os.path.join(a.out, f"slices-{c:03d}.{ext}"), slices, ext)
    if not FOR_API:
        write_change(a.out, a.endpoints, 0)
    print(f"vip0={vip(0)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

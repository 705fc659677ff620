#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0 OR MIT
"""Client and server ends of tests/snat_veth.rs, run inside its netns.

  veth_peer.py tcp-server PORT         for each connection: read to EOF,
                                       answer "PEERADDR PEERPORT NBYTES\n"
                                       then DOWN bytes (from the first line)
  veth_peer.py udp-server PORT         per datagram: "PEERADDR PEERPORT NBYTES"
  veth_peer.py tcp-client SRC SPORT DST DPORT UP DOWN
  veth_peer.py udp-client SRC SPORT DST DPORT NBYTES

Clients print the server's answer line (TCP: and the count of bytes that
followed) and exit 0; a refused UDP datagram prints "refused". Servers
listen on both families; every socket operation has a timeout.
"""
import socket
import sys

TIMEOUT = 20


def family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def peer(addr):
    host = addr[0]
    if host.startswith("::ffff:"):
        host = host[len("::ffff:"):]
    return host, addr[1]


def tcp_server(port):
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port))
    s.listen(16)
    while True:
        c, addr = s.accept()
        c.settimeout(TIMEOUT)
        with c:
            head = b""
            while not head.endswith(b"\n"):
                b = c.recv(1)
                if not b:
                    break
                head += b
            down = int(head or b"0")
            n = 0
            while True:
                b = c.recv(1 << 16)
                if not b:
                    break
                n += len(b)
            host, p = peer(addr)
            c.sendall(f"{host} {p} {n}\n".encode())
            chunk = b"\0" * (1 << 16)
            while down > 0:
                c.sendall(chunk[:down])
                down -= min(down, len(chunk))


def udp_server(port):
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port))
    while True:
        data, addr = s.recvfrom(1 << 16)
        host, p = peer(addr)
        s.sendto(f"{host} {p} {len(data)}".encode(), addr)


def connect(kind, src, sport, dst, dport):
    s = socket.socket(family(dst), kind)
    s.settimeout(TIMEOUT)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((src, sport))
    s.connect((dst, dport))
    return s


def tcp_client(src, sport, dst, dport, up, down):
    s = connect(socket.SOCK_STREAM, src, sport, dst, dport)
    s.sendall(f"{down}\n".encode())
    chunk = b"\0" * (1 << 16)
    while up > 0:
        s.sendall(chunk[:up])
        up -= min(up, len(chunk))
    s.shutdown(socket.SHUT_WR)
    data = b""
    while True:
        b = s.recv(1 << 16)
        if not b:
            break
        data += b
    line, _, rest = data.partition(b"\n")
    print(line.decode(), len(rest))


def udp_client(src, sport, dst, dport, n):
    s = connect(socket.SOCK_DGRAM, src, sport, dst, dport)
    s.settimeout(3)
    # A refused datagram is reported on a later call, so try a few times
    for _ in range(3):
        try:
            s.send(b"\0" * n)
            print(s.recv(1 << 16).decode())
            return
        except ConnectionRefusedError:
            print("refused")
            return
        except socket.timeout:
            continue
    print("timeout")


def main(argv):
    cmd, args = argv[1], argv[2:]
    if cmd == "tcp-server":
        tcp_server(int(args[0]))
    elif cmd == "udp-server":
        udp_server(int(args[0]))
    elif cmd == "tcp-client":
        tcp_client(args[0], int(args[1]), args[2], int(args[3]),
                   int(args[4]), int(args[5]))
    elif cmd == "udp-client":
        udp_client(args[0], int(args[1]), args[2], int(args[3]), int(args[4]))
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main(sys.argv)

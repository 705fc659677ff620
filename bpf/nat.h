/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* nat.h: the rewrite itself. Requests leaving the node (IP_VS_BPF_DIR_ORIG,
 * egress) get the session's SNAT source; replies reaching it
 * (IP_VS_BPF_DIR_REPLY, ingress) get the client back as destination, before
 * IPVS sees them. Plain packets, fragments and ICMP errors about a session.
 *
 * Transport checksums of plain packets go through bpf_l4_csum_replace(),
 * which knows the skb's checksum state: CHECKSUM_PARTIAL keeps only the
 * pseudo-header sum in the field, CHECKSUM_COMPLETE needs skb->csum kept in
 * step. For the latter, every byte that changes must be matched by a
 * checksum field that absorbs it, or be stored with BPF_F_RECOMPUTE_CSUM:
 *  - an IPv4 address: the IP header checksum absorbs it; the helper takes
 *    the pseudo-header change off skb->csum along with the L4 field;
 *  - an IPv6 address: nothing in the header absorbs it, so it is stored
 *    with RECOMPUTE (+d), which also squares the helper's pseudo-header
 *    adjustment (-d) when an L4 checksum absorbed it. The same on every
 *    kernel, with or without BPF_F_IPV6;
 *  - a port: the L4 checksum absorbs it, except SCTP's (CRC32c) and a UDP
 *    checksum of 0, where it is stored with RECOMPUTE.
 * The fields quoted inside an ICMP error are ordinary data to the stack,
 * absorbed by the ICMP checksum, and are updated here with csum.h.
 */
#ifndef IPVSBPF_NAT_H
#define IPVSBPF_NAT_H

#include <stdbool.h>
#include <stddef.h>

#include "common.h"
#include "csum.h"
#include "maps.h"
#include "parse.h"
#include "stats.h"

/* Where the replies of IPVS's SNAT sessions arrive: the SNAT addresses and
 * port range the proxy hands IPVS with the session map (IPVS_CMD_NEW_BPF),
 * set before load. IPVS gives every SNAT session one of these addresses,
 * and a port of the range unless it is SCTP (which keeps the client's
 * port), so ingress passes any other packet without a lookup: on a node
 * most of what arrives is not for a SNAT session (ClusterIP replies,
 * NodePort requests, the node's own traffic). A change of address or
 * range means loading the programs again. @on 0 (the default): every
 * packet is looked up.
 */
struct ipvsbpf_snat_dst {
	__be32 addr4;
	__be32 addr6[4];
	__u16 port_min;		/* host order, inclusive */
	__u16 port_max;
	__u8 on;
	__u8 has4;
	__u8 has6;
	__u8 pad;
};

_Static_assert(sizeof(struct ipvsbpf_snat_dst) == 28, "no implicit padding");

const volatile struct ipvsbpf_snat_dst ipvsbpf_snat_dst = {};

/* An arriving packet (or ICMP error, or fragment) that cannot be about a
 * SNAT session by its outer destination address.
 */
static __always_inline bool snat_dst_addr_excluded(const struct pkt *p)
{
	if (!ipvsbpf_snat_dst.on)
		return false;
	if (p->family == AF_INET)
		return !ipvsbpf_snat_dst.has4 ||
		       p->daddr[0] != ipvsbpf_snat_dst.addr4;
	return !ipvsbpf_snat_dst.has6 ||
	       ((p->daddr[0] ^ ipvsbpf_snat_dst.addr6[0]) |
		(p->daddr[1] ^ ipvsbpf_snat_dst.addr6[1]) |
		(p->daddr[2] ^ ipvsbpf_snat_dst.addr6[2]) |
		(p->daddr[3] ^ ipvsbpf_snat_dst.addr6[3]));
}

/* The same by its destination port, once the ports are parsed */
static __always_inline bool snat_dst_port_excluded(const struct pkt *p)
{
	__u16 port = bpf_ntohs(p->dport);

	return ipvsbpf_snat_dst.on && p->proto != IPPROTO_SCTP &&
	       (port < ipvsbpf_snat_dst.port_min ||
		port > ipvsbpf_snat_dst.port_max);
}

static __always_inline void session_key(struct ip_vs_bpf_key *key,
					const __be32 *saddr, const __be32 *daddr,
					__be16 sport, __be16 dport,
					__u8 family, __u8 proto, __u8 dir)
{
	__builtin_memcpy(key->saddr, saddr, sizeof(key->saddr));
	__builtin_memcpy(key->daddr, daddr, sizeof(key->daddr));
	key->sport = sport;
	key->dport = dport;
	key->family = family;
	key->protocol = proto;
	key->dir = dir;
}

static __always_inline int l4_csum_off(__u8 proto)
{
	switch (proto) {
	case IPPROTO_TCP:
		return IPVSBPF_TCP_CSUM_OFF;
	case IPPROTO_UDP:
		return IPVSBPF_UDP_CSUM_OFF;
	default:
		/* SCTP's CRC32c covers no addresses */
		return -1;
	}
}

/* UDP over IPv4 may carry no checksum (0): keep it that way, and never
 * write a computed 0, which would read as "none".
 */
static __always_inline __u64 l4_csum_flags(__u8 proto)
{
	return proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
}

static __always_inline __u32 addr_off(const struct pkt *p, bool src)
{
	if (p->family == AF_INET)
		return p->l3_off + (src ? offsetof(struct iphdr, saddr) :
					  offsetof(struct iphdr, daddr));
	return p->l3_off + (src ? offsetof(struct ipv6hdr, saddr) :
				  offsetof(struct ipv6hdr, daddr));
}

/* Rewrite the source (@src) or destination address to @to; with @l4, the
 * transport header is in this packet and its checksum follows.
 */
static __always_inline int nat_rewrite_addr(struct __sk_buff *skb,
					    const struct pkt *p, bool src,
					    const __be32 *to, bool l4)
{
	const __be32 *from = src ? p->saddr : p->daddr;
	int csum = l4 ? l4_csum_off(p->proto) : -1;
	__u64 flags = l4_csum_flags(p->proto);
	__s64 diff;

	if (p->family == AF_INET) {
		if (csum >= 0 &&
		    bpf_l4_csum_replace(skb, p->l4_off + csum, from[0], to[0],
					flags | BPF_F_PSEUDO_HDR | sizeof(__be32)))
			return -1;
		if (bpf_l3_csum_replace(skb, p->l3_off + offsetof(struct iphdr, check),
					from[0], to[0], sizeof(__be32)))
			return -1;
		return bpf_skb_store_bytes(skb, addr_off(p, src), to,
					   sizeof(__be32), 0);
	}
	if (csum >= 0) {
		diff = bpf_csum_diff((__be32 *)from, 16, (__be32 *)to, 16, 0);
		if (bpf_l4_csum_replace(skb, p->l4_off + csum, 0, diff,
					flags | BPF_F_PSEUDO_HDR))
			return -1;
	}
	return bpf_skb_store_bytes(skb, addr_off(p, src), to, 16,
				   BPF_F_RECOMPUTE_CSUM);
}

static __always_inline int nat_rewrite_port(struct __sk_buff *skb,
					    const struct pkt *p, bool src,
					    __be16 to)
{
	__be16 from = src ? p->sport : p->dport;
	int csum = l4_csum_off(p->proto);
	__u64 store = 0;

	if (from == to)
		return 0;
	if (csum < 0 || (p->proto == IPPROTO_UDP && !p->l4_csum))
		store = BPF_F_RECOMPUTE_CSUM;
	else if (bpf_l4_csum_replace(skb, p->l4_off + csum, from, to,
				     l4_csum_flags(p->proto) | sizeof(__be16)))
		return -1;
	return bpf_skb_store_bytes(skb, p->l4_off + (src ? 0 : sizeof(__be16)),
				   &to, sizeof(to), store);
}

static __always_inline void frag_key(struct ipvsbpf_frag_key *k,
				     const struct pkt *p, __u8 dir)
{
	__builtin_memcpy(k->saddr, p->saddr, sizeof(k->saddr));
	__builtin_memcpy(k->daddr, p->daddr, sizeof(k->daddr));
	k->id = p->frag_id;
	k->family = p->family;
	k->proto = p->frag_proto;
	k->dir = dir;
}

static __always_inline int frag_remember(const struct pkt *p, __u8 dir,
					 const struct ip_vs_bpf_value *v)
{
	struct ipvsbpf_frag_key k = {};
	struct ipvsbpf_frag_value fv = {
		.xlate = *v,
		.expires = bpf_ktime_get_ns() + ipvsbpf_frag_timeout_ns,
	};

	frag_key(&k, p, dir);
	return bpf_map_update_elem(&ipvsbpf_frags, &k, &fv, BPF_ANY);
}

/* Called for every first fragment that is not translated: a later fragment
 * must never inherit the translation of an earlier datagram with the same
 * id.
 */
static __always_inline void frag_forget(const struct pkt *p, __u8 dir)
{
	struct ipvsbpf_frag_key k = {};

	frag_key(&k, p, dir);
	bpf_map_delete_elem(&ipvsbpf_frags, &k);
}

/* A TCP, UDP or SCTP packet, or the first fragment of one. */
static __always_inline int nat_session(struct __sk_buff *skb, struct pkt *p,
				       __u8 dir)
{
	bool src = dir == IP_VS_BPF_DIR_ORIG;
	struct ip_vs_bpf_key key = {};
	struct ip_vs_bpf_value *hit, v;
	int reason;

	reason = parse_ports(skb, p, l4_hlen(p->proto));
	if (reason)
		return reason;
	if (!src && snat_dst_port_excluded(p))
		return IPVSBPF_PASS_NOT_SNAT_DST;

	session_key(&key, p->saddr, p->daddr, p->sport, p->dport, p->family,
		    p->proto, dir);
	hit = bpf_map_lookup_elem(&ipvs_sessions, &key);
	if (!hit)
		return IPVSBPF_PASS_MISS;
	/* IPVS may delete the entry under us and the preallocated element be
	 * reused at once: take one snapshot, then decide on it.
	 */
	v = *hit;
	if (!(v.flags & IP_VS_BPF_F_SNAT))
		return IPVSBPF_PASS_NOSNAT;

	if (p->proto == IPPROTO_SCTP && v.port != (src ? p->sport : p->dport))
		return IPVSBPF_DROP_SCTP_PORT;
	if (nat_rewrite_addr(skb, p, src, v.addr, true) ||
	    nat_rewrite_port(skb, p, src, v.port))
		return IPVSBPF_DROP_WRITE;
	if (p->frag == IPVSBPF_FRAG_FIRST && frag_remember(p, dir, &v))
		return IPVSBPF_XLATED_NOFRAG;
	return IPVSBPF_XLATED;
}

/* A non-first fragment: addresses only, as its first fragment had them. */
static __always_inline int nat_frag(struct __sk_buff *skb, const struct pkt *p,
				    __u8 dir)
{
	struct ipvsbpf_frag_value *hit, fv;
	struct ipvsbpf_frag_key k = {};

	frag_key(&k, p, dir);
	hit = bpf_map_lookup_elem(&ipvsbpf_frags, &k);
	if (!hit)
		return IPVSBPF_PASS_FRAG_MISS;
	fv = *hit;
	/* Older than reassembly would wait: the id belongs to a new datagram */
	if (bpf_ktime_get_ns() > fv.expires)
		return IPVSBPF_PASS_FRAG_MISS;
	if (nat_rewrite_addr(skb, p, dir == IP_VS_BPF_DIR_ORIG, fv.xlate.addr,
			     false))
		return IPVSBPF_DROP_WRITE;
	return IPVSBPF_FRAG_XLATED;
}

static __always_inline int store16(struct __sk_buff *skb, __u32 off, __u16 v)
{
	return bpf_skb_store_bytes(skb, off, &v, sizeof(v), 0);
}

/* An ICMP or ICMPv6 error: a BPF subprogram of its own rather than inlined,
 * so the rare path does not double the size of both programs.
 *
 * The packet it quotes went the other way: a reply
 * (real server -> client) for an error leaving towards the real server, a
 * translated request for one coming back from it. So the session is looked
 * up with the quoted tuple reversed, the quoted packet gets the opposite
 * field of a plain packet, and the outer header the same field.
 */
static __noinline int nat_icmp(struct __sk_buff *skb, struct pkt *p,
				    __u8 dir)
{
	bool outer_src = dir == IP_VS_BPF_DIR_ORIG, inner_src = !outer_src;
	__u32 alen = p->family == AF_INET ? 4 : 16;
	struct ip_vs_bpf_key key = {};
	struct ip_vs_bpf_value *hit, v;
	__u16 icmp_check, old, new;
	__u32 delta, addr_delta, off;
	struct pkt in = {};
	__be16 from_port;
	__u8 hdr[2];
	int csum;

	if (p->l4_off + IPVSBPF_ICMP_HLEN > p->l3_end ||
	    bpf_skb_load_bytes(skb, p->l4_off, hdr, sizeof(hdr)) ||
	    bpf_skb_load_bytes(skb, p->l4_off + IPVSBPF_ICMP_CSUM_OFF,
			       &icmp_check, sizeof(icmp_check)))
		return IPVSBPF_ERR_L4;
	if (!icmp_is_error(p->family, hdr[0]))
		return IPVSBPF_PASS_PROTO;

	/* The quote is cut short by design: it ends where the outer packet
	 * does, whatever its own length field says.
	 */
	in.l3_off = p->l4_off + IPVSBPF_ICMP_HLEN;
	in.l3_end = p->l3_end;
	if (parse_l3(skb, &in, p->family, true))
		return IPVSBPF_ERR_ICMP_INNER;
	if (in.frag == IPVSBPF_FRAG_LATER || !proto_has_ports(in.proto))
		return IPVSBPF_PASS_PROTO;
	/* RFC 792: at least the first 8 bytes of the transport header */
	if (parse_ports(skb, &in, 8))
		return IPVSBPF_ERR_ICMP_INNER;

	session_key(&key, in.daddr, in.saddr, in.dport, in.sport, p->family,
		    in.proto, dir);
	hit = bpf_map_lookup_elem(&ipvs_sessions, &key);
	if (!hit)
		return IPVSBPF_PASS_ICMP_MISS;
	v = *hit;
	if (!(v.flags & IP_VS_BPF_F_SNAT))
		return IPVSBPF_PASS_NOSNAT;

	/* Quoted address; its IPv4 header checksum absorbs the change */
	addr_delta = csum_delta_addr(0, inner_src ? in.saddr : in.daddr, v.addr,
				     alen / 4);
	delta = addr_delta;
	if (bpf_skb_store_bytes(skb, addr_off(&in, inner_src), v.addr, alen, 0))
		return IPVSBPF_DROP_WRITE;
	if (p->family == AF_INET) {
		off = in.l3_off + offsetof(struct iphdr, check);
		if (bpf_skb_load_bytes(skb, off, &old, sizeof(old)))
			return IPVSBPF_DROP_WRITE;
		new = csum_update(old, addr_delta);
		if (store16(skb, off, new))
			return IPVSBPF_DROP_WRITE;
		delta = csum_delta16(delta, old, new);
	}

	/* Quoted transport checksum, when the quote reaches it: pseudo-header
	 * address and port. A UDP checksum of 0 means none.
	 */
	from_port = inner_src ? in.sport : in.dport;
	csum = l4_csum_off(in.proto);
	if (csum >= 0 && in.l4_off + csum + sizeof(__u16) <= in.l3_end) {
		off = in.l4_off + csum;
		if (bpf_skb_load_bytes(skb, off, &old, sizeof(old)))
			return IPVSBPF_DROP_WRITE;
		if (old || in.proto != IPPROTO_UDP) {
			new = csum_update(old, csum_delta16(addr_delta, from_port,
							    v.port));
			if (!new && in.proto == IPPROTO_UDP)
				new = 0xffff;
			if (store16(skb, off, new))
				return IPVSBPF_DROP_WRITE;
			delta = csum_delta16(delta, old, new);
		}
	}
	if (store16(skb, in.l4_off + (inner_src ? 0 : sizeof(__be16)), v.port))
		return IPVSBPF_DROP_WRITE;
	delta = csum_delta16(delta, from_port, v.port);

	/* Outer address; ICMPv6 covers it in its pseudo-header */
	if (p->family == AF_INET) {
		if (bpf_l3_csum_replace(skb, p->l3_off + offsetof(struct iphdr, check),
					outer_src ? p->saddr[0] : p->daddr[0],
					v.addr[0], sizeof(__be32)))
			return IPVSBPF_DROP_WRITE;
	} else {
		delta = csum_delta_addr(delta, outer_src ? p->saddr : p->daddr,
					v.addr, 4);
	}
	if (bpf_skb_store_bytes(skb, addr_off(p, outer_src), v.addr, alen, 0))
		return IPVSBPF_DROP_WRITE;

	if (store16(skb, p->l4_off + IPVSBPF_ICMP_CSUM_OFF,
		    csum_update(icmp_check, delta)))
		return IPVSBPF_DROP_WRITE;
	if (p->frag == IPVSBPF_FRAG_FIRST && frag_remember(p, dir, &v))
		return IPVSBPF_XLATED_NOFRAG;
	return IPVSBPF_ICMP_XLATED;
}

#endif /* IPVSBPF_NAT_H */

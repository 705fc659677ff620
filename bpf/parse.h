/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* parse.h: IPv4/IPv6 and transport header parsing into struct pkt.
 *
 * Headers are read with bpf_skb_load_bytes(), which works on non-linear
 * (GRO, GSO) skbs and fails cleanly past the end of the packet: a truncated
 * header is a reason code, never an out-of-bounds read.
 */
#ifndef IPVSBPF_PARSE_H
#define IPVSBPF_PARSE_H

#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <stdbool.h>

#include "common.h"
#include "stats.h"

/* IPv6 extension headers walked before giving up (RFC 8200 order: hop-by-
 * hop, destination, routing, fragment, authentication, destination).
 */
#ifndef IPVSBPF_IPV6_MAX_EXTHDRS
#define IPVSBPF_IPV6_MAX_EXTHDRS	6
#endif

#define IPVSBPF_IP_MF		0x2000
#define IPVSBPF_IP_OFFSET	0x1fff
#define IPVSBPF_IP6_MF		0x0001
#define IPVSBPF_IP6_OFFSET	0xfff8

/* Length of the transport header the programs read or rewrite: the ports
 * plus, for TCP and UDP, the checksum; SCTP's common header.
 */
#define IPVSBPF_TCP_HLEN	20
#define IPVSBPF_UDP_HLEN	8
#define IPVSBPF_SCTP_HLEN	12
#define IPVSBPF_TCP_CSUM_OFF	16
#define IPVSBPF_UDP_CSUM_OFF	6
#define IPVSBPF_ICMP_HLEN	8
#define IPVSBPF_ICMP_CSUM_OFF	2

/* ICMP error types (RFC 792, RFC 4443). <linux/icmp.h> drags in libc's
 * socket headers, which do not build for the bpf target.
 */
#define IPVSBPF_ICMP_DEST_UNREACH	3
#define IPVSBPF_ICMP_SOURCE_QUENCH	4
#define IPVSBPF_ICMP_TIME_EXCEEDED	11
#define IPVSBPF_ICMP_PARAMETERPROB	12
#define IPVSBPF_ICMPV6_DEST_UNREACH	1
#define IPVSBPF_ICMPV6_PKT_TOOBIG	2
#define IPVSBPF_ICMPV6_TIME_EXCEED	3
#define IPVSBPF_ICMPV6_PARAMPROB	4

enum ipvsbpf_frag {
	IPVSBPF_FRAG_NONE = 0,
	IPVSBPF_FRAG_FIRST,		/* offset 0, more fragments follow */
	IPVSBPF_FRAG_LATER,		/* offset > 0: no transport header */
};

struct pkt {
	__be32 saddr[4];		/* IPv4 in word 0, the rest zero */
	__be32 daddr[4];
	__u32 l3_off;			/* IP header */
	__u32 l4_off;			/* transport (or ICMP) header */
	__u32 l3_end;			/* end of the datagram, or of the quote */
	__be32 frag_id;			/* IPv4 id or IPv6 identification */
	__be16 sport;
	__be16 dport;
	__u16 l4_csum;			/* UDP: the checksum field (0: none) */
	__u8 family;
	__u8 proto;			/* transport protocol */
	__u8 frag_proto;		/* protocol field naming the fragments */
	__u8 frag;			/* enum ipvsbpf_frag */
};

/* With @quoted, the header is the one an ICMP error quotes: the caller has
 * set p->l3_end to where the quote ends, whatever the header's length says.
 */
static __always_inline int parse_ipv4(struct __sk_buff *skb, struct pkt *p,
				      bool quoted)
{
	struct iphdr ip;
	__u32 hlen, tot;
	__u16 frag;

	if (bpf_skb_load_bytes(skb, p->l3_off, &ip, sizeof(ip)))
		return IPVSBPF_ERR_L3;
	hlen = ip.ihl * 4;
	tot = bpf_ntohs(ip.tot_len);
	if (ip.version != 4 || hlen < sizeof(ip))
		return IPVSBPF_ERR_L3;
	if (tot && tot < hlen)
		return IPVSBPF_ERR_L3;
	if (!quoted) {
		/* tot_len 0 is BIG TCP's GSO packet over 64 KiB */
		if (p->l3_off + tot > skb->len || (!tot && !skb->gso_size))
			return IPVSBPF_ERR_L3;
		p->l3_end = tot ? p->l3_off + tot : skb->len;
	}

	p->family = AF_INET;
	p->proto = ip.protocol;
	p->frag_proto = ip.protocol;
	p->saddr[0] = ip.saddr;
	p->daddr[0] = ip.daddr;
	p->l4_off = p->l3_off + hlen;

	frag = bpf_ntohs(ip.frag_off);
	p->frag_id = ip.id;
	if (frag & IPVSBPF_IP_OFFSET)
		p->frag = IPVSBPF_FRAG_LATER;
	else if (frag & IPVSBPF_IP_MF)
		p->frag = IPVSBPF_FRAG_FIRST;
	return IPVSBPF_NONE;
}

/* The first four bytes of every IPv6 extension header parse_ipv6() walks
 * but the fragment header (fixed size, below); all are at least 8 bytes.
 * The last two mean something only in a routing header.
 */
struct ipvsbpf_ipv6_opt {
	__u8 nexthdr;
	__u8 hdrlen;
	__u8 rt_type;
	__u8 rt_segleft;
};

struct ipvsbpf_ipv6_frag {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off;
	__be32 identification;
};

/* Extension headers parse_ipv6() walks past to reach the transport */
static __always_inline bool ipv6_is_exthdr(__u8 nexthdr)
{
	return nexthdr == IPPROTO_HOPOPTS || nexthdr == IPPROTO_ROUTING ||
	       nexthdr == IPPROTO_DSTOPTS || nexthdr == IPPROTO_AH ||
	       nexthdr == IPPROTO_FRAGMENT;
}

static __always_inline int parse_ipv6(struct __sk_buff *skb, struct pkt *p,
				      bool quoted)
{
	struct ipv6hdr ip6;
	__u32 off, plen;
	__u8 nexthdr;
	int i;

	if (bpf_skb_load_bytes(skb, p->l3_off, &ip6, sizeof(ip6)))
		return IPVSBPF_ERR_L3;
	if (ip6.version != 6)
		return IPVSBPF_ERR_L3;
	plen = bpf_ntohs(ip6.payload_len);
	if (!quoted) {
		/* payload_len 0: BIG TCP's GSO packet over 64 KiB */
		if (p->l3_off + sizeof(ip6) + plen > skb->len ||
		    (!plen && !skb->gso_size))
			return IPVSBPF_ERR_L3;
		p->l3_end = plen ? p->l3_off + sizeof(ip6) + plen : skb->len;
	}

	p->family = AF_INET6;
	__builtin_memcpy(p->saddr, &ip6.saddr, sizeof(p->saddr));
	__builtin_memcpy(p->daddr, &ip6.daddr, sizeof(p->daddr));
	off = p->l3_off + sizeof(ip6);
	nexthdr = ip6.nexthdr;

#pragma unroll
	for (i = 0; i < IPVSBPF_IPV6_MAX_EXTHDRS; i++) {
		struct ipvsbpf_ipv6_opt opt;
		struct ipvsbpf_ipv6_frag fh;
		__u16 fo;

		if (!ipv6_is_exthdr(nexthdr))
			goto done;
		if (nexthdr == IPPROTO_FRAGMENT) {
			if (bpf_skb_load_bytes(skb, off, &fh, sizeof(fh)))
				return IPVSBPF_ERR_EXTHDR;
			nexthdr = fh.nexthdr;
			off += sizeof(fh);
			fo = bpf_ntohs(fh.frag_off);
			p->frag_id = fh.identification;
			p->frag_proto = fh.nexthdr;
			if (fo & IPVSBPF_IP6_OFFSET) {
				/* What follows is the middle of the payload */
				p->frag = IPVSBPF_FRAG_LATER;
				goto done;
			}
			if (fo & IPVSBPF_IP6_MF)
				p->frag = IPVSBPF_FRAG_FIRST;
			continue;
		}
		if (bpf_skb_load_bytes(skb, off, &opt, sizeof(opt)))
			return IPVSBPF_ERR_EXTHDR;
		/* The transport checksum covers the final destination, not
		 * this one: a rewrite could not keep it right.
		 */
		if (nexthdr == IPPROTO_ROUTING && opt.rt_segleft)
			return IPVSBPF_PASS_RTHDR;
		/* AH counts its length in 4-byte words, the others in 8 */
		off += nexthdr == IPPROTO_AH ? (opt.hdrlen + 2) * 4 :
					       (opt.hdrlen + 1) * 8;
		nexthdr = opt.nexthdr;
	}
	/* Still inside the chain after the last header we walk */
	if (ipv6_is_exthdr(nexthdr))
		return IPVSBPF_ERR_EXTHDR;
done:
	if (off > p->l3_end)
		return IPVSBPF_ERR_EXTHDR;
	p->proto = nexthdr;
	if (p->frag == IPVSBPF_FRAG_NONE)
		p->frag_proto = nexthdr;
	p->l4_off = off;
	return IPVSBPF_NONE;
}

static __always_inline int parse_l3(struct __sk_buff *skb, struct pkt *p,
				    __u8 family, bool quoted)
{
	return family == AF_INET ? parse_ipv4(skb, p, quoted) :
				   parse_ipv6(skb, p, quoted);
}

static __always_inline bool proto_has_ports(__u8 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP ||
	       proto == IPPROTO_SCTP;
}

/* Bytes of transport header that must be present to rewrite its ports and
 * checksum.
 */
static __always_inline __u32 l4_hlen(__u8 proto)
{
	switch (proto) {
	case IPPROTO_TCP:
		return IPVSBPF_TCP_HLEN;
	case IPPROTO_UDP:
		return IPVSBPF_UDP_HLEN;
	default:
		return IPVSBPF_SCTP_HLEN;
	}
}

/* Ports of a TCP, UDP or SCTP header whose first @need (>= 8) bytes must
 * lie in the datagram.
 */
static __always_inline int parse_ports(struct __sk_buff *skb, struct pkt *p,
				       __u32 need)
{
	__be16 w[4];	/* ports, then UDP's length and checksum */

	if (p->l4_off + need > p->l3_end)
		return IPVSBPF_ERR_L4;
	if (bpf_skb_load_bytes(skb, p->l4_off, w, sizeof(w)))
		return IPVSBPF_ERR_L4;
	p->sport = w[0];
	p->dport = w[1];
	p->l4_csum = w[3];
	return IPVSBPF_NONE;
}

/* Error messages that quote the packet they are about (RFC 792, RFC 4443) */
static __always_inline bool icmp_is_error(__u8 family, __u8 type)
{
	if (family == AF_INET)
		return type == IPVSBPF_ICMP_DEST_UNREACH ||
		       type == IPVSBPF_ICMP_SOURCE_QUENCH ||
		       type == IPVSBPF_ICMP_TIME_EXCEEDED ||
		       type == IPVSBPF_ICMP_PARAMETERPROB;
	return type == IPVSBPF_ICMPV6_DEST_UNREACH ||
	       type == IPVSBPF_ICMPV6_PKT_TOOBIG ||
	       type == IPVSBPF_ICMPV6_TIME_EXCEED ||
	       type == IPVSBPF_ICMPV6_PARAMPROB;
}

#endif /* IPVSBPF_PARSE_H */

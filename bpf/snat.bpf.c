// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* snat.bpf.c: the tc (clsact) half of ipvs-bpf, on the node's uplink.
 *
 *   ipvsbpf_egress   requests after IPVS's DNAT: IP_VS_BPF_DIR_ORIG entry
 *                    -> source := SNAT addr:port
 *   ipvsbpf_ingress  replies before IPVS: IP_VS_BPF_DIR_REPLY entry
 *                    -> destination := client addr:port
 *   ipvsbpf_l3_egress, ipvsbpf_l3_ingress
 *                    the same on devices without a link-layer header
 *                    (IPIP, ip6tnl, SIT, WireGuard, TUN): the IP header is
 *                    at offset 0 there, at ETH_HLEN on Ethernet devices
 *                    (the kernel keeps 15 characters of a name: tc shows
 *                    ipvsbpf_l3_egre and ipvsbpf_l3_ingr)
 *
 * The session map (ipvs_sessions) is handed to IPVS, which fills it. One
 * hash lookup per TCP/UDP/SCTP packet, but for arriving packets that are
 * not addressed to a SNAT address and port (nat.h); a miss passes the
 * packet untouched.
 * Verdicts are TC_ACT_UNSPEC ("next filter, else pass") so programs of
 * other owners on the same hook still run, and TC_ACT_SHOT only for the
 * IPVSBPF_DROP_* reasons. Devices with another link-layer header (GRE,
 * InfiniBand, IPsec vti/xfrm after decapsulation) get neither pair: the
 * proxy refuses them.
 */
#include "common.h"
#include "maps.h"
#include "nat.h"
#include "parse.h"
#include "stats.h"

static __always_inline int ipvsbpf_handle(struct __sk_buff *skb, __u8 dir,
					  __u32 l3_off)
{
	struct pkt p = {};
	int reason;

	p.l3_off = l3_off;
	switch (skb->protocol) {
	case bpf_htons(ETH_P_IP):
		reason = parse_ipv4(skb, &p, false);
		break;
	case bpf_htons(ETH_P_IPV6):
		reason = parse_ipv6(skb, &p, false);
		break;
	default:
		reason = IPVSBPF_PASS_NOT_IP;
		break;
	}
	if (reason)
		goto out;
	if (dir == IP_VS_BPF_DIR_REPLY && snat_dst_addr_excluded(&p)) {
		reason = IPVSBPF_PASS_NOT_SNAT_DST;
		goto out;
	}

	/* The fragment map holds only what translated first fragments put
	 * there, whatever header follows the IPv6 fragment header.
	 */
	if (p.frag == IPVSBPF_FRAG_LATER) {
		reason = nat_frag(skb, &p, dir);
		goto out;
	}

	switch (p.proto) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
	case IPPROTO_SCTP:
		reason = nat_session(skb, &p, dir);
		break;
	case IPPROTO_ICMP:
		reason = p.family == AF_INET ? nat_icmp(skb, &p, dir) :
					       IPVSBPF_PASS_PROTO;
		break;
	case IPPROTO_ICMPV6:
		reason = p.family == AF_INET6 ? nat_icmp(skb, &p, dir) :
						IPVSBPF_PASS_PROTO;
		break;
	default:
		reason = IPVSBPF_PASS_PROTO;
	}
out:
	/* Parsing sets FIRST only once addresses and id are known */
	if (p.frag == IPVSBPF_FRAG_FIRST && reason != IPVSBPF_XLATED &&
	    reason != IPVSBPF_ICMP_XLATED && reason != IPVSBPF_XLATED_NOFRAG)
		frag_forget(&p, dir);
	ipvsbpf_count(skb, dir, reason);
	return ipvsbpf_drops(reason) ? TC_ACT_SHOT : TC_ACT_UNSPEC;
}

SEC("tc")
int ipvsbpf_egress(struct __sk_buff *skb)
{
	return ipvsbpf_handle(skb, IP_VS_BPF_DIR_ORIG, ETH_HLEN);
}

SEC("tc")
int ipvsbpf_ingress(struct __sk_buff *skb)
{
	return ipvsbpf_handle(skb, IP_VS_BPF_DIR_REPLY, ETH_HLEN);
}

SEC("tc")
int ipvsbpf_l3_egress(struct __sk_buff *skb)
{
	return ipvsbpf_handle(skb, IP_VS_BPF_DIR_ORIG, 0);
}

SEC("tc")
int ipvsbpf_l3_ingress(struct __sk_buff *skb)
{
	return ipvsbpf_handle(skb, IP_VS_BPF_DIR_REPLY, 0);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* stats.h: the reason code of every decision the SNAT programs take, and the
 * per-CPU counters, one slot per (direction, reason), that userspace exports.
 */
#ifndef IPVSBPF_STATS_H
#define IPVSBPF_STATS_H

#include <stdbool.h>

#include "common.h"

/* Reasons are part of the userspace contract: the proxy exports them by
 * name, and a pinned counter map outlives the programs. Append only.
 * Values from IPVSBPF_DROP_FIRST to IPVSBPF_DROP_LAST drop the packet;
 * every other decision lets it pass, translated or not.
 */
enum ipvsbpf_reason {
	IPVSBPF_NONE = 0,		/* internal: keep going; never counted */
	IPVSBPF_XLATED,			/* session hit: rewritten */
	IPVSBPF_XLATED_NOFRAG,		/* first fragment rewritten, but not
					 * remembered (fragment map full): the
					 * later fragments will miss
					 */
	IPVSBPF_ICMP_XLATED,		/* ICMP error about a session: outer and
					 * inner headers rewritten
					 */
	IPVSBPF_FRAG_XLATED,		/* later fragment rewritten by the
					 * fragment map
					 */
	IPVSBPF_PASS_NOSNAT,		/* session hit without IP_VS_BPF_F_SNAT */
	IPVSBPF_PASS_MISS,		/* no session */
	IPVSBPF_PASS_ICMP_MISS,		/* ICMP error about no session */
	IPVSBPF_PASS_FRAG_MISS,		/* later fragment whose first fragment
					 * was not translated here (or not yet
					 * seen: out of order)
					 */
	IPVSBPF_PASS_NOT_IP,		/* neither IPv4 nor IPv6 */
	IPVSBPF_PASS_PROTO,		/* not TCP, UDP, SCTP or an ICMP error
					 * about one of them
					 */
	IPVSBPF_PASS_RTHDR,		/* IPv6 routing header with segments
					 * left: destination not final
					 */
	IPVSBPF_ERR_L3,			/* IP header truncated or invalid */
	IPVSBPF_ERR_EXTHDR,		/* IPv6 extension headers truncated or
					 * too many
					 */
	IPVSBPF_ERR_L4,			/* transport header truncated */
	IPVSBPF_ERR_ICMP_INNER,		/* ICMP error's inner packet truncated
					 * or invalid
					 */
	IPVSBPF_DROP_FIRST,
	IPVSBPF_DROP_SCTP_PORT = IPVSBPF_DROP_FIRST,
					/* SCTP session whose port changes: its
					 * CRC32c cannot be updated here
					 */
	IPVSBPF_DROP_WRITE,		/* a rewrite helper failed half way: the
					 * packet is dropped rather than sent
					 * half translated
					 */
	IPVSBPF_DROP_LAST = IPVSBPF_DROP_WRITE,
	IPVSBPF_PASS_NOT_SNAT_DST,	/* arriving packet not addressed to a
					 * SNAT address and port: cannot be
					 * about a SNAT session, not looked up
					 */
	__IPVSBPF_REASON_MAX,
};

/* Counter slots: direction (IP_VS_BPF_DIR_*) * __IPVSBPF_REASON_MAX + reason */
#define IPVSBPF_NR_DIRS		2
#define IPVSBPF_NR_SLOTS	(IPVSBPF_NR_DIRS * __IPVSBPF_REASON_MAX)

static __always_inline bool ipvsbpf_drops(enum ipvsbpf_reason reason)
{
	return reason >= IPVSBPF_DROP_FIRST && reason <= IPVSBPF_DROP_LAST;
}

struct ipvsbpf_counter {
	__u64 packets;
	__u64 bytes;
};

_Static_assert(sizeof(struct ipvsbpf_counter) == 16,
	       "userspace reads a counter as two u64");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, IPVSBPF_NR_SLOTS);
	__type(key, __u32);
	__type(value, struct ipvsbpf_counter);
} ipvsbpf_stats SEC(".maps");

/* The reason enum is only reachable from userspace through BTF; this
 * variable puts it there (and in the skeleton's types) without a hand copy.
 */
const volatile enum ipvsbpf_reason ipvsbpf_reason_max = __IPVSBPF_REASON_MAX;

static __always_inline void ipvsbpf_count(const struct __sk_buff *skb, __u8 dir,
					  enum ipvsbpf_reason reason)
{
	__u32 slot = (__u32)dir * __IPVSBPF_REASON_MAX + reason;
	struct ipvsbpf_counter *c;

	/* A per-CPU array lookup: inlined by the verifier on 6.10+, no
	 * helper call on the hit path.
	 */
	c = bpf_map_lookup_elem(&ipvsbpf_stats, &slot);
	if (c) {
		c->packets++;
		c->bytes += skb->len;
	}
}

#endif /* IPVSBPF_STATS_H */

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* pktcount.bpf.c: packet and byte counters for a clsact hook, one slot per
 * direction in a per-CPU array. Every packet passes unchanged; the testbed
 * uses it as a meter on a device and the build uses it to prove the
 * clang → skeleton → load chain.
 */
#include "common.h"

enum pktcount_dir {
	PKTCOUNT_INGRESS = 0,
	PKTCOUNT_EGRESS = 1,
	__PKTCOUNT_MAX,
};

struct pktcount {
	__u64 packets;
	__u64 bytes;
};

_Static_assert(sizeof(struct pktcount) == 16, "pktcount is read by userspace as two u64");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, __PKTCOUNT_MAX);
	__type(key, __u32);
	__type(value, struct pktcount);
} pktcount_stats SEC(".maps");

static __always_inline int pktcount_account(const struct __sk_buff *skb, __u32 dir)
{
	struct pktcount *c = bpf_map_lookup_elem(&pktcount_stats, &dir);

	/* Cannot fail for an in-range key of an array map; the check is for
	 * the verifier.
	 */
	if (c) {
		c->packets++;
		c->bytes += skb->len;
	}
	return TC_ACT_OK;
}

SEC("tc")
int pktcount_ingress(struct __sk_buff *skb)
{
	return pktcount_account(skb, PKTCOUNT_INGRESS);
}

SEC("tc")
int pktcount_egress(struct __sk_buff *skb)
{
	return pktcount_account(skb, PKTCOUNT_EGRESS);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

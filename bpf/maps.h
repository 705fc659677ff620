/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* maps.h: the IPVS session map (filled by the kernel, read here) and the
 * fragment map (ours: translations remembered for non-first fragments).
 */
#ifndef IPVSBPF_MAPS_H
#define IPVSBPF_MAPS_H

#include <linux/ip_vs.h>

#include "common.h"

#ifndef IPVSBPF_SESSIONS_DEFAULT
#define IPVSBPF_SESSIONS_DEFAULT	65536	/* userspace sets the real size */
#endif
#ifndef IPVSBPF_FRAGS_DEFAULT
#define IPVSBPF_FRAGS_DEFAULT		8192
#endif

_Static_assert(sizeof(struct ip_vs_bpf_key) == 40, "uapi session key layout");
_Static_assert(sizeof(struct ip_vs_bpf_value) == 20, "uapi session value layout");

/* IPVS owns every entry: it inserts at connection creation and deletes at
 * expiry, so the map is a plain hash (IPVS refuses anything else) that the
 * programs may only read.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, IPVSBPF_SESSIONS_DEFAULT);
	__uint(map_flags, BPF_F_RDONLY_PROG);
	__type(key, struct ip_vs_bpf_key);
	__type(value, struct ip_vs_bpf_value);
} ipvs_sessions SEC(".maps");

/* A fragmented datagram: its addresses as they reach the hook, before any
 * rewrite, and the id every fragment carries.
 */
struct ipvsbpf_frag_key {
	__be32 saddr[4];
	__be32 daddr[4];
	__be32 id;
	__u8 family;
	__u8 proto;
	__u8 dir;
	__u8 pad;
};

_Static_assert(sizeof(struct ipvsbpf_frag_key) == 40, "no implicit padding");

/* How long a first fragment's translation holds; userspace may set it
 * before load. The default is the default reassembly timeout
 * (net.ipv4.ipfrag_time, net.ipv6.ip6frag_time).
 */
const volatile __u64 ipvsbpf_frag_timeout_ns = 30ULL * 1000 * 1000 * 1000;

struct ipvsbpf_frag_value {
	struct ip_vs_bpf_value xlate;	/* the address to write */
	__u32 pad;
	__u64 expires;			/* bpf_ktime_get_ns() deadline */
};

_Static_assert(sizeof(struct ipvsbpf_frag_value) == 32, "no implicit padding");

/* Written by the first fragment, read by the later ones. Nothing tells
 * which fragment is the last, so entries expire with the reassembly timeout
 * and are left to LRU eviction; a first fragment that is not translated
 * removes a stale entry for its id.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, IPVSBPF_FRAGS_DEFAULT);
	__type(key, struct ipvsbpf_frag_key);
	__type(value, struct ipvsbpf_frag_value);
} ipvsbpf_frags SEC(".maps");

#endif /* IPVSBPF_MAPS_H */

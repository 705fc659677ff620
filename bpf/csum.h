/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* csum.h: one's-complement checksum arithmetic (RFC 1071, RFC 1624) for the
 * fields the helpers cannot update: those inside an ICMP error.
 *
 * A delta is a 32-bit accumulator of 16-bit words: for each word that
 * changes, ~old + new. Sums are byte-order neutral, so words are taken as
 * they sit in the packet.
 */
#ifndef IPVSBPF_CSUM_H
#define IPVSBPF_CSUM_H

#include "common.h"

static __always_inline __u32 csum_delta16(__u32 acc, __u16 old, __u16 new)
{
	return acc + (__u16)~old + new;
}

static __always_inline __u32 csum_delta32(__u32 acc, __u32 old, __u32 new)
{
	acc = csum_delta16(acc, old >> 16, new >> 16);
	return csum_delta16(acc, old & 0xffff, new & 0xffff);
}

/* @n 32-bit words: 1 for an IPv4 address, 4 for IPv6 */
static __always_inline __u32 csum_delta_addr(__u32 acc, const __be32 *old,
					     const __be32 *new, int n)
{
	int i;

#pragma unroll
	for (i = 0; i < 4; i++) {
		if (i < n)
			acc = csum_delta32(acc, old[i], new[i]);
	}
	return acc;
}

static __always_inline __u16 csum_fold(__u32 acc)
{
	acc = (acc & 0xffff) + (acc >> 16);
	acc = (acc & 0xffff) + (acc >> 16);
	return (__u16)acc;
}

/* The checksum field after the data it covers changed by @delta
 * (RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m')).
 */
static __always_inline __u16 csum_update(__u16 check, __u32 delta)
{
	return (__u16)~csum_fold((__u32)(__u16)~check + csum_fold(delta));
}

#endif /* IPVSBPF_CSUM_H */

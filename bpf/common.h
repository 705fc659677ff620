/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* common.h: includes, tc verdicts and helpers every ipvs-bpf program shares. */
#ifndef IPVSBPF_COMMON_H
#define IPVSBPF_COMMON_H

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#ifndef AF_INET
#define AF_INET		2
#endif
#ifndef AF_INET6
#define AF_INET6	10
#endif

/* The kernel's own -EINVAL, the only errno the programs test for. */
#define IPVSBPF_EINVAL	22

/* bpf_l4_csum_replace(): leave skb->csum alone for an IPv6 pseudo-header
 * change (6.16, backported to 6.12.y). The uapi enum may predate it, so the
 * value is spelled out; older kernels refuse it with -EINVAL.
 */
#define IPVSBPF_F_IPV6	(1ULL << 7)

#endif /* IPVSBPF_COMMON_H */

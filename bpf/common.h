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

#endif /* IPVSBPF_COMMON_H */

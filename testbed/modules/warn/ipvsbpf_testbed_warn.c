// SPDX-License-Identifier: GPL-2.0
/*
 * ipvsbpf_testbed_warn: raises one kernel WARNING when loaded.
 *
 * The testbed's runner must fail any run whose kernel log carries a WARNING
 * splat; its self-test loads this module in the guest and checks that the
 * run is reported as failed. Never loaded outside that test.
 */
#include <linux/bug.h>
#include <linux/module.h>

static int __init ipvsbpf_testbed_warn_init(void)
{
	WARN(1, "ipvsbpf testbed: injected warning (runner self-test)\n");
	return 0;
}

static void __exit ipvsbpf_testbed_warn_exit(void)
{
}

module_init(ipvsbpf_testbed_warn_init);
module_exit(ipvsbpf_testbed_warn_exit);
MODULE_DESCRIPTION("Raise one WARNING for the ipvs-bpf testbed runner self-test");
MODULE_LICENSE("GPL");

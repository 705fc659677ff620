//! The kernel back-ends: what programs the node besides IPVS's virtual
//! servers (the reconciler's job). [`bpfmode`] sets up the `ipvs-bpf`
//! mode around the tc SNAT [`datapath`] (and [`pktcount`], its test
//! counter program) and filters `loadBalancerSourceRanges` in
//! [`lbfirewall`]; [`ipvsmode`] is the `ipvs` mode's ipsets, iptables and
//! dummy device, as kube-proxy's IPVS proxier; [`conntrack`] applies the
//! `conntrack:` settings in either mode; [`hostinfo`] reads what both
//! need off the node.

pub mod bpfmode;
pub mod conntrack;
pub mod datapath;
pub mod hostinfo;
pub mod ipvsmode;
pub mod lbfirewall;
pub mod pktcount;

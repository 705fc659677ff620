//! What the proxy serves: the health server and the health-check node
//! ports ([`http`]) and Prometheus [`metrics`].

pub mod http;
pub mod metrics;

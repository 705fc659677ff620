//! What the proxy serves: the health server and the health-check node
//! ports ([`http`]), Prometheus [`metrics`], and Kubernetes [`events`] on
//! its Node.

pub mod events;
pub mod http;
pub mod metrics;

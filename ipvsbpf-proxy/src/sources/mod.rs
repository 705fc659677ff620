//! (being written)
pub mod file;
pub mod kube;

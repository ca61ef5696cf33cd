//! k8slite-api: the Kubernetes API model of k8slite, without I/O.
//!
//! The [`registry`] holds one row per served resource; everything that needs to know about
//! resources (routing, discovery, OpenAPI, tables, storage keys) reads it. [`status`] builds
//! upstream-shaped `Status` errors, [`selector`] parses label and field selectors, [`meta`] and
//! [`validation`] work on object metadata; [`quantity`] parses, prints and adds resource
//! quantities for every crate.

pub mod cluster_network;
pub mod convert;
pub mod defaults;
pub mod expand;
pub mod gojson;
pub mod managed;
pub mod meta;
pub mod openapi;
pub mod proto;
pub mod quantity;
pub mod registry;
pub mod schema;
pub mod selector;
pub mod smp;
pub mod spdy;
pub mod status;
pub mod table;
pub mod tunnel;
pub mod typed;
pub mod validation;

pub use registry::{Registry, ResourceInfo, STANDARD_VERBS as STANDARD};
pub use status::{ApiError, Cause};

/// The Kubernetes version whose API this server implements (the `k8s-openapi` feature).
pub const KUBE_VERSION: &str = "v1.33.0";

//! Builders for unit tests.
#![allow(missing_docs)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, Node, NodeSelectorRequirement, NodeSpec, NodeStatus, Pod, PodSpec,
    ResourceRequirements, Taint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

pub fn list(items: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    items
        .iter()
        .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
        .collect()
}

pub fn labels(items: &[(&str, &str)]) -> BTreeMap<String, String> {
    items
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn sel(items: &[(&str, &str)]) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels(items)),
        match_expressions: None,
    }
}

pub fn node_req(key: &str, op: &str, vals: &[&str]) -> NodeSelectorRequirement {
    NodeSelectorRequirement {
        key: key.into(),
        operator: op.into(),
        values: if vals.is_empty() {
            None
        } else {
            Some(vals.iter().map(|v| v.to_string()).collect())
        },
    }
}

pub fn container(name: &str, requests: &[(&str, &str)]) -> Container {
    Container {
        name: name.into(),
        image: Some("busybox".into()),
        resources: if requests.is_empty() {
            None
        } else {
            Some(ResourceRequirements {
                requests: Some(list(requests)),
                ..Default::default()
            })
        },
        ..Default::default()
    }
}

/// A pending pod `name` (uid `uid-NAME`, namespace `default`) with one container.
pub fn pod_with_requests(name: &str, requests: &[(&str, &str)]) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![container("c", requests)],
            scheduler_name: Some("default-scheduler".into()),
            ..Default::default()
        }),
        status: None,
    }
}

/// A pod bound to `node` with `labels`.
pub fn bound_pod(name: &str, node: &str, l: &[(&str, &str)]) -> Pod {
    let mut p = pod_with_requests(name, &[]);
    p.metadata.labels = Some(labels(l));
    p.spec.as_mut().expect("spec").node_name = Some(node.into());
    p
}

/// A node with allocatable cpu/memory/pods and the hostname label.
pub fn node(name: &str, cpu: &str, memory: &str, pods: &str) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels(&[("kubernetes.io/hostname", name)])),
            ..Default::default()
        },
        spec: Some(NodeSpec::default()),
        status: Some(NodeStatus {
            allocatable: Some(list(&[("cpu", cpu), ("memory", memory), ("pods", pods)])),
            capacity: Some(list(&[("cpu", cpu), ("memory", memory), ("pods", pods)])),
            ..Default::default()
        }),
    }
}

pub fn taint(key: &str, value: &str, effect: &str) -> Taint {
    Taint {
        key: key.into(),
        value: if value.is_empty() {
            None
        } else {
            Some(value.into())
        },
        effect: effect.into(),
        time_added: None,
    }
}

pub fn with_labels(mut n: Node, l: &[(&str, &str)]) -> Node {
    let m = n.metadata.labels.get_or_insert_with(BTreeMap::new);
    for (k, v) in l {
        m.insert(k.to_string(), v.to_string());
    }
    n
}

//! What a pod requests and what a node offers, in integer units (millicores, bytes, counts).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use k8slite_api::quantity::Quantity as Parsed;

/// cpu assumed for a container without a cpu request when scoring (upstream: 100m).
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// memory assumed for a container without a memory request when scoring (upstream: 200 MB).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// An amount of each resource the scheduler accounts for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    /// cpu in millicores.
    pub milli_cpu: i64,
    /// memory in bytes.
    pub memory: i64,
    /// ephemeral-storage in bytes.
    pub ephemeral_storage: i64,
    /// Number of pods (only meaningful for node allocatable).
    pub pods: i64,
    /// Extended and other resources by name (whole units).
    pub scalar: BTreeMap<String, i64>,
}

impl Resources {
    /// Add `other` to `self`.
    pub fn add(&mut self, other: &Resources) {
        self.milli_cpu += other.milli_cpu;
        self.memory += other.memory;
        self.ephemeral_storage += other.ephemeral_storage;
        self.pods += other.pods;
        for (k, v) in &other.scalar {
            *self.scalar.entry(k.clone()).or_default() += v;
        }
    }

    /// Subtract `other` from `self`.
    pub fn sub(&mut self, other: &Resources) {
        self.milli_cpu -= other.milli_cpu;
        self.memory -= other.memory;
        self.ephemeral_storage -= other.ephemeral_storage;
        self.pods -= other.pods;
        for (k, v) in &other.scalar {
            *self.scalar.entry(k.clone()).or_default() -= v;
        }
    }

    /// Element-wise maximum.
    fn max_with(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        self.pods = self.pods.max(other.pods);
        for (k, v) in &other.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }

    /// Read a resource list (`requests`, `allocatable`, `overhead`).
    pub fn from_list(list: &BTreeMap<String, Quantity>) -> Self {
        let mut r = Self::default();
        for (name, q) in list {
            // unparsable quantities count as zero (the API server validates them on write)
            let parsed = Parsed::from_k8s(q).unwrap_or_default();
            match name.as_str() {
                "cpu" => r.milli_cpu = parsed.milli_i64(),
                "memory" => r.memory = parsed.value(),
                "ephemeral-storage" => r.ephemeral_storage = parsed.value(),
                "pods" => r.pods = parsed.value(),
                other => {
                    r.scalar.insert(other.to_string(), parsed.value());
                }
            }
        }
        r
    }
}

/// A container's requests; a resource with a limit but no request requests its limit (what
/// API defaulting does, repeated here for objects that skipped it).
fn container_requests(c: &Container) -> Resources {
    let Some(res) = c.resources.as_ref() else {
        return Resources::default();
    };
    let mut list = res.limits.clone().unwrap_or_default();
    if let Some(req) = &res.requests {
        list.extend(req.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    Resources::from_list(&list)
}

/// What a pod requests, as upstream computes it: the larger of the sum over app containers
/// (plus restartable "sidecar" init containers) and the largest regular init container (plus
/// the sidecars started before it), plus the pod overhead. `pods` is 1.
pub fn pod_requests(pod: &Pod) -> Resources {
    let Some(spec) = pod.spec.as_ref() else {
        return Resources {
            pods: 1,
            ..Default::default()
        };
    };
    let mut sum = Resources::default();
    for c in &spec.containers {
        sum.add(&container_requests(c));
    }
    let mut sidecars = Resources::default();
    let mut init_max = Resources::default();
    for c in spec.init_containers.iter().flatten() {
        let r = container_requests(c);
        if c.restart_policy.as_deref() == Some("Always") {
            sidecars.add(&r);
            init_max.max_with(&sidecars);
        } else {
            let mut during = sidecars.clone();
            during.add(&r);
            init_max.max_with(&during);
        }
    }
    sum.add(&sidecars);
    sum.max_with(&init_max);
    if let Some(overhead) = &spec.overhead {
        sum.add(&Resources::from_list(overhead));
    }
    sum.pods = 1;
    sum
}

/// cpu and memory of a pod for scoring: containers without a request count as
/// [`DEFAULT_MILLI_CPU_REQUEST`] / [`DEFAULT_MEMORY_REQUEST`] (upstream's "non-zero" requests),
/// so best-effort pods still spread.
pub fn pod_non_zero_requests(pod: &Pod) -> (i64, i64) {
    let Some(spec) = pod.spec.as_ref() else {
        return (0, 0);
    };
    let non_zero = |c: &Container| {
        let r = container_requests(c);
        let has = |name: &str| {
            c.resources.as_ref().is_some_and(|res| {
                res.requests.as_ref().is_some_and(|m| m.contains_key(name))
                    || res.limits.as_ref().is_some_and(|m| m.contains_key(name))
            })
        };
        (
            if has("cpu") {
                r.milli_cpu
            } else {
                DEFAULT_MILLI_CPU_REQUEST
            },
            if has("memory") {
                r.memory
            } else {
                DEFAULT_MEMORY_REQUEST
            },
        )
    };
    let (mut cpu, mut mem) = (0, 0);
    for c in &spec.containers {
        let (c, m) = non_zero(c);
        cpu += c;
        mem += m;
    }
    for c in spec.init_containers.iter().flatten() {
        let (c, m) = non_zero(c);
        cpu = cpu.max(c);
        mem = mem.max(m);
    }
    if let Some(o) = &spec.overhead {
        let o = Resources::from_list(o);
        cpu += o.milli_cpu;
        mem += o.memory;
    }
    (cpu, mem)
}

/// What a node offers to pods (`status.allocatable`; absent resources are 0).
pub fn node_allocatable(node: &Node) -> Resources {
    node.status
        .as_ref()
        .and_then(|s| s.allocatable.as_ref())
        .map(Resources::from_list)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    #[test]
    fn sums_containers_and_takes_max_of_init() {
        let mut pod = pod_with_requests("p", &[("cpu", "100m"), ("memory", "64Mi")]);
        let spec = pod.spec.as_mut().expect("spec");
        spec.containers.push(container("b", &[("cpu", "200m")]));
        spec.init_containers = Some(vec![
            container("i1", &[("cpu", "500m")]),
            container("i2", &[("memory", "32Mi")]),
        ]);
        let r = pod_requests(&pod);
        assert_eq!(r.milli_cpu, 500, "init max (500m) beats the sum (300m)");
        assert_eq!(r.memory, 64 << 20, "sum (64Mi) beats the init max (32Mi)");
        assert_eq!(r.pods, 1);
    }

    #[test]
    fn sidecars_add_to_the_sum_and_overhead_is_added() {
        let mut pod = pod_with_requests("p", &[("cpu", "100m")]);
        let spec = pod.spec.as_mut().expect("spec");
        let mut sidecar = container("s", &[("cpu", "50m")]);
        sidecar.restart_policy = Some("Always".into());
        spec.init_containers = Some(vec![sidecar, container("i", &[("cpu", "120m")])]);
        spec.overhead = Some(list(&[("cpu", "10m")]));
        let r = pod_requests(&pod);
        // init phase: 50m sidecar + 120m = 170m; app phase: 100m + 50m = 150m; + 10m overhead.
        assert_eq!(r.milli_cpu, 180);
    }

    #[test]
    fn limits_stand_in_for_missing_requests_and_extended_resources_count() {
        let mut pod = pod_with_requests("p", &[]);
        let c = &mut pod.spec.as_mut().expect("spec").containers[0];
        c.resources = Some(k8s_openapi::api::core::v1::ResourceRequirements {
            limits: Some(list(&[("cpu", "1"), ("example.com/gpu", "2")])),
            ..Default::default()
        });
        let r = pod_requests(&pod);
        assert_eq!(r.milli_cpu, 1000);
        assert_eq!(r.scalar.get("example.com/gpu"), Some(&2));
    }

    #[test]
    fn non_zero_requests_default_for_best_effort() {
        let pod = pod_with_requests("p", &[]);
        assert_eq!(
            pod_non_zero_requests(&pod),
            (DEFAULT_MILLI_CPU_REQUEST, DEFAULT_MEMORY_REQUEST)
        );
        let pod = pod_with_requests("p", &[("cpu", "300m")]);
        assert_eq!(pod_non_zero_requests(&pod), (300, DEFAULT_MEMORY_REQUEST));
    }

    #[test]
    fn allocatable_reads_node_status() {
        let n = node("n1", "2", "4Gi", "110");
        let a = node_allocatable(&n);
        assert_eq!((a.milli_cpu, a.memory, a.pods), (2000, 4 << 30, 110));
    }
}

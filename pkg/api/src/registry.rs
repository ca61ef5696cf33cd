//! The resource registry: one row per served resource. Routing, discovery, OpenAPI, table
//! printing and storage keys all read this table; CRDs add rows at runtime.

use std::collections::BTreeMap;
use std::sync::Arc;

/// The standard verbs of a read/write resource, in discovery order.
pub const STANDARD_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
/// Verbs of namespaces (no deletecollection upstream).
pub const NAMESPACE_VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];
/// Verbs of create-only review resources (TokenReview, SubjectAccessReview, …).
pub const CREATE_ONLY: &[&str] = &["create"];

/// A subresource served under a resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subresource {
    /// Name in the URL, e.g. `status`.
    pub name: String,
    /// Kind it accepts/returns (e.g. the parent's kind for status, `Scale` for scale).
    pub kind: String,
    /// Group of that kind (`autoscaling` for Scale, `policy` for Eviction…).
    pub group: String,
    /// Version of that kind.
    pub version: String,
    /// Verbs allowed on it.
    pub verbs: Vec<String>,
}

/// An additional printer column of a custom resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrinterColumn {
    /// Header.
    pub name: String,
    /// OpenAPI type (`string`, `integer`, `date`, …).
    pub kind: String,
    /// JSONPath into the object (`.spec.replicas`).
    pub json_path: String,
    /// 0 shown always, >0 with `-o wide`.
    pub priority: u8,
}

/// Where the scale subresource of a custom resource reads and writes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScalePaths {
    /// `.spec.replicas`
    pub spec_replicas: String,
    /// `.status.replicas`
    pub status_replicas: String,
    /// `.status.selector` (optional)
    pub label_selector: Option<String>,
}

/// One served resource (one group/version/plural).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceInfo {
    /// API group (`""` for core).
    pub group: String,
    /// Version (`v1`, `v2`, …).
    pub version: String,
    /// Kind (`Pod`).
    pub kind: String,
    /// Plural resource name (`pods`).
    pub plural: String,
    /// Singular name (`pod`).
    pub singular: String,
    /// kubectl short names (`po`).
    pub short_names: Vec<String>,
    /// Categories (`all`).
    pub categories: Vec<String>,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Verbs on the resource itself.
    pub verbs: Vec<String>,
    /// Subresources.
    pub subresources: Vec<Subresource>,
    /// Storage group/resource this version is stored under (`autoscaling/horizontalpodautoscalers`
    /// for both autoscaling/v1 and v2). Keys are `/registry/<storage>/<ns>/<name>`.
    pub storage: String,
    /// Whether the object is kept in the store (false for virtual review resources).
    pub stored: bool,
    /// True for CRD-defined resources.
    pub custom: bool,
    /// Printer columns of a custom resource.
    pub printer_columns: Vec<PrinterColumn>,
    /// Scale paths of a custom resource with a scale subresource.
    pub scale: Option<ScalePaths>,
    /// The structural schema (`openAPIV3Schema`) of a custom resource version.
    pub schema: Option<Arc<serde_json::Value>>,
}

impl ResourceInfo {
    /// `apiVersion` of this resource (`v1`, `apps/v1`).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `group/version` used in URLs and discovery, e.g. `apps/v1` or `v1`.
    pub fn group_version(&self) -> String {
        self.api_version()
    }

    /// Kind of the list (`PodList`).
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// `plural.group` (`deployments.apps`; `pods` for core).
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Store key prefix for all objects of this resource, ending in `/`.
    pub fn key_prefix(&self) -> String {
        format!("/registry/{}/", self.storage)
    }

    /// Store key prefix for the objects of one namespace (or all when `ns` is `None`).
    pub fn key_prefix_in(&self, ns: Option<&str>) -> String {
        match (self.namespaced, ns) {
            (true, Some(ns)) => format!("/registry/{}/{}/", self.storage, ns),
            _ => self.key_prefix(),
        }
    }

    /// Store key of one object.
    pub fn key(&self, ns: Option<&str>, name: &str) -> String {
        match (self.namespaced, ns) {
            (true, Some(ns)) => format!("/registry/{}/{}/{}", self.storage, ns, name),
            _ => format!("/registry/{}/{}", self.storage, name),
        }
    }

    /// Whether the resource serves `verb`.
    pub fn has_verb(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }

    /// A subresource by name.
    pub fn subresource(&self, name: &str) -> Option<&Subresource> {
        self.subresources.iter().find(|s| s.name == name)
    }
}

/// Shorthand to build built-in rows compactly.
struct Row {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    short: &'static [&'static str],
    cats: &'static [&'static str],
    namespaced: bool,
    verbs: &'static [&'static str],
    subs: &'static [&'static str],
}

const ALL: &[&str] = &["all"];
const NONE: &[&str] = &[];
const STATUS: &[&str] = &["status"];
const STATUS_SCALE: &[&str] = &["status", "scale"];

#[rustfmt::skip]
const BUILTINS: &[Row] = &[
    // core/v1
    Row { group: "", version: "v1", kind: "Binding", plural: "bindings", short: NONE, cats: NONE, namespaced: true, verbs: CREATE_ONLY, subs: NONE },
    Row { group: "", version: "v1", kind: "ConfigMap", plural: "configmaps", short: &["cm"], cats: NONE, namespaced: true, verbs: STANDARD_VERBS, subs: NONE },
    Row { group: "", version: "v1", kind: "Endpoints", plural: "endpoints", short: &["ep"], cats: NONE, namespaced: true, verbs: STANDARD_VERBS, subs: NONE },
    Row { group: "", version: "v1", kind: "Event", plural: "events", short: &["ev"], cats: NONE, namespaced: true, verbs: STANDARD_VERBS, subs: NONE },
    Row { group: "", version: "v1", kind: "LimitRange", plural: "limitranges", short: &["limits"], cats: NONE, namespaced: true, verbs: STANDARD_VERBS, subs: NONE },
    Row { group: "", version: "v1", kind: "Namespace", plural: "namespaces", short: &["ns"], cats: NONE, namespaced: false, verbs: NAMESPACE_VERBS, subs: &["status", "finalize"] },
    Row { group: "", version: "v1", kind: "Node", plural: "nodes", short: &["no"], cats: NONE, namespaced: false, verbs: STANDARD_VERBS, subs: &["status", "proxy"] },
    Row { group: "", version: "v1", kind: "PersistentVolumeClaim", plural: "persistentvolumeclaims", short: &["pvc"], cats: NONE, namespaced: true, verbs: STANDARD_VERBS, subs: STATUS },
    Row { group: "", version: "v1", kind: "PersistentVolume", plural: "persistentvolumes", short: &["pv"], cats: NONE, namespaced: false, verbs: STANDARD_VERBS, subs: STATUS },
    Row { group: "", version: "v1", kind: "Pod", plural: "pods", short: &["po"], cats: ALL, namespaced: true, verbs: STANDARD_VERBS, subs: &["status", "binding", "eviction", "log", "exec", "attach", "portforward", "proxy", "ephemeralcontainers"] },
    Row { group: "", version: "v1", kind: "PodTemplate", plural: "podtemplates", short: NONE, cats: NONE, namespaced: true, verbs: STANDARD_VERBS, subs: NONE },
    Row { group: "", version: "v1", kind: "ReplicationController", plural: "replicationcontrollers", short: &["rc"], cats: ALL, namespaced: true, verbs: STANDARD_VERBS, subs: STATUS_SCALE },
    Row { group: "", version: "v1", kind: "ResourceQuota", plural: "resourcequotas", short: &["quota"], cats: NONE, namespaced: true, verbs: STANDARD_VERBS, subs: STATUS },
    Row { group: "", version: "v1", kind: "Secret", plural: "secrets", short: NONE, cats: NONE, namespaced: true, verbs: STANDARD_VERBS, subs: NONE },
    Row { group: "", version: "v1", kind: "ServiceAccount", plural: "serviceaccounts", short: &["sa"], cats: NONE, namespaced: true, verbs: STANDARD_VERBS, subs: &["token"] },
    Row { group: "", version: "v1", kind: "Service", plural: "services", short: &["svc"], cats: ALL, namespaced: true, verbs: STANDARD_VERBS, subs: &["status", "proxy"] },
    // apps/v1
    Row { group: "apps", version: "v1", kind: "ControllerRevision", plural: "controllerrevisions", short: NONE, cats: NONE, namespaced: true, verbs: STANDARD_VERBS, subs: NONE },
    Row { group: "apps", version: "v1", kind: "DaemonSet", plural: "daemonsets", short: &["ds"], cats: ALL, namespaced: true, verbs: STANDARD_VERBS, subs: STATUS },
    Row { group: "apps", version: "v1", kind: "Deployment", plural: "deployments", short: &["deploy"], cats: ALL, namespaced: true, verbs: STANDARD_VERBS, subs: STATUS_SCALE },
    Row { group: "apps", version: "v1", kind: "ReplicaSet", plural: "replicasets", short: &["rs"], cats: ALL, namespaced: true, verbs: STANDARD_VERBS, subs: STATUS_SCALE },
    Row { group: "apps", version: "v1", kind: "StatefulSet", plural: "statefulsets", short: &["sts"], cats: ALL, namespaced: true, verbs: STANDARD_VERBS, subs: STATUS_SCALE },
    // authentication.k8s.io/v1
    Row { group: "authentication.k8s.io", version: "v1", kind: "SelfSubjectReview", plural: "selfsubjectreviews", short: NONE, cats: NONE, namespaced: false, verbs: CREATE_ONLY, subs: NONE },
    Row { group: "authentication.k8s.io", version: "v1", kind: "TokenReview", plural: "tokenreviews", short: NONE, cats: NONE, namespaced: false, verbs: CREATE_ONLY, subs: NONE },
    // authorization.k8s.io/v1
    Row { group: "authorization.k8s.io", version: "v1", kind: "LocalSubjectAccessReview", plural: "localsubjectaccessreviews", short: NONE, cats: NONE, namespaced: true, verbs: CREATE_ONLY, subs: NONE },
    Row { group: "authorization.k8s.io", version: "v1", kind: "SelfSubjectAccessReview", plural: "selfsubjectaccessreviews", short: NONE, cats: NONE, namespaced: false, verbs: CREATE_ONLY, subs: NONE },
    Row { group: "authorization.k8s.io", version: "v1", kind: "SelfSubjectRulesReview", plural: "selfsubjectrulesreviews", short: NONE, cats: NONE, namespaced: false, verbs: CREATE_ONLY, subs: NONE },
    Row { group: "authorization.k8s.io", version: "v1", kind: "SubjectAccessReview", plural: "subjectaccessreviews", short: NONE, cats: NONE, namespaced: false, verbs: CREATE_ONLY, subs: NONE },
    // autoscaling/v1, v2
    Row { group: "autoscaling", version: "v2", kind: "HorizontalPodAutoscaler", plural: "horizontalpodautoscalers", short: &["hpa"], cats: ALL, namespaced: true, verbs: STANDARD_VERBS, subs: STATUS },
    Row { group: "autoscaling", version: "v1", kind: "HorizontalPodAutoscaler", plural: "horizontalpodautoscalers", short: &["hpa"], cats: ALL, namespaced: true, verbs: STANDARD_VERBS, subs: STATUS },
    // batch/v1
    Row { group: "batch", version: "v1", kind: "CronJob", plural: "cronjobs", short: &["cj"], cats: ALL, namespaced: true, verbs: STANDARD_VERBS, subs: STATUS },
    Row { group: "batch", version: "v1", kind: "Job", plural: "jobs", short: NONE, cats: ALL, namespaced: true, verbs: STANDARD_VERBS, subs: STATUS },
    // certificates.k8s.io/v1
    Row { group: "", version: "v1", kind: "ComponentStatus", plural: "componentstatuses", short: &["cs"], cats: NONE, namespaced: false, verbs: &["get", "list"], subs: &[] },
    Row { group: "certificates.k8s.io", version: "v1", kind: "CertificateSigningRequest", plural: "certificatesigningrequests", short: &["csr"], cats: NONE, namespaced: false, verbs: STANDARD_VERBS, subs: &["status", "approval"] },
    // coordination.k8s.io/v1
    Row { group: "coordination.k8s.io", version: "v1", kind: "Lease", plural: "leases", short: NONE, cats: NONE, namespaced: true, verbs: STANDARD_VERBS, subs: NONE },
    // discovery.k8s.io/v1
    Row { group: "discovery.k8s.io", version: "v1", kind: "EndpointSlice", plural: "endpointslices", short: NONE, cats: NONE, namespaced: true, verbs: STANDARD_VERBS, subs: NONE },
    // events.k8s.io/v1
    Row { group: "events.k8s.io", version: "v1", kind: "Event", plural: "events", short: &["ev"], cats: NONE, namespaced: true, verbs: STANDARD_VERBS, subs: NONE },
    // networking.k8s.io/v1
    Row { group: "networking.k8s.io", version: "v1", kind: "IngressClass", plural: "ingressclasses", short: NONE, cats: NONE, namespaced: false, verbs: STANDARD_VERBS, subs: NONE },
    Row { group: "networking.k8s.io", version: "v1", kind: "Ingress", plural: "ingresses", short: &["ing"], cats: NONE, namespaced: true, verbs: STANDARD_VERBS, subs: STATUS },
    Row { group: "networking.k8s.io", version: "v1", kind: "NetworkPolicy", plural: "networkpolicies", short: &["netpol"], cats: NONE, namespaced: true, verbs: STANDARD_VERBS, subs: NONE },
    // node.k8s.io/v1
    Row { group: "node.k8s.io", version: "v1", kind: "RuntimeClass", plural: "runtimeclasses", short: NONE, cats: NONE, namespaced: false, verbs: STANDARD_VERBS, subs: NONE },
    // policy/v1
    Row { group: "policy", version: "v1", kind: "PodDisruptionBudget", plural: "poddisruptionbudgets", short: &["pdb"], cats: NONE, namespaced: true, verbs: STANDARD_VERBS, subs: STATUS },
    // rbac.authorization.k8s.io/v1
    Row { group: "rbac.authorization.k8s.io", version: "v1", kind: "ClusterRoleBinding", plural: "clusterrolebindings", short: NONE, cats: NONE, namespaced: false, verbs: STANDARD_VERBS, subs: NONE },
    Row { group: "rbac.authorization.k8s.io", version: "v1", kind: "ClusterRole", plural: "clusterroles", short: NONE, cats: NONE, namespaced: false, verbs: STANDARD_VERBS, subs: NONE },
    Row { group: "rbac.authorization.k8s.io", version: "v1", kind: "RoleBinding", plural: "rolebindings", short: NONE, cats: NONE, namespaced: true, verbs: STANDARD_VERBS, subs: NONE },
    Row { group: "rbac.authorization.k8s.io", version: "v1", kind: "Role", plural: "roles", short: NONE, cats: NONE, namespaced: true, verbs: STANDARD_VERBS, subs: NONE },
    // scheduling.k8s.io/v1
    Row { group: "scheduling.k8s.io", version: "v1", kind: "PriorityClass", plural: "priorityclasses", short: &["pc"], cats: NONE, namespaced: false, verbs: STANDARD_VERBS, subs: NONE },
    // storage.k8s.io/v1
    Row { group: "storage.k8s.io", version: "v1", kind: "CSIDriver", plural: "csidrivers", short: NONE, cats: NONE, namespaced: false, verbs: STANDARD_VERBS, subs: NONE },
    Row { group: "storage.k8s.io", version: "v1", kind: "CSINode", plural: "csinodes", short: NONE, cats: NONE, namespaced: false, verbs: STANDARD_VERBS, subs: NONE },
    Row { group: "storage.k8s.io", version: "v1", kind: "StorageClass", plural: "storageclasses", short: &["sc"], cats: NONE, namespaced: false, verbs: STANDARD_VERBS, subs: NONE },
    Row { group: "storage.k8s.io", version: "v1", kind: "VolumeAttachment", plural: "volumeattachments", short: NONE, cats: NONE, namespaced: false, verbs: STANDARD_VERBS, subs: STATUS },
    // apiextensions.k8s.io/v1
    Row { group: "apiextensions.k8s.io", version: "v1", kind: "CustomResourceDefinition", plural: "customresourcedefinitions", short: &["crd", "crds"], cats: &["api-extensions"], namespaced: false, verbs: STANDARD_VERBS, subs: STATUS },
];

/// Verbs of the `proxy` subresources (one per HTTP method, as upstream lists them).
const PROXY_VERBS: &[&str] = &["create", "delete", "get", "patch", "update"];

/// Kind, group and version served by a subresource name of a parent resource.
fn subresource_of(parent: &Row, name: &str) -> Subresource {
    let (group, version, kind, verbs): (&str, &str, &str, &[&str]) = match name {
        "status" | "approval" => (
            parent.group,
            parent.version,
            parent.kind,
            &["get", "patch", "update"],
        ),
        "scale" => ("autoscaling", "v1", "Scale", &["get", "patch", "update"]),
        "binding" => ("", "v1", "Binding", CREATE_ONLY),
        "eviction" => ("policy", "v1", "Eviction", CREATE_ONLY),
        "token" => ("authentication.k8s.io", "v1", "TokenRequest", CREATE_ONLY),
        "finalize" => ("", "v1", "Namespace", &["update"]),
        "ephemeralcontainers" => ("", "v1", "Pod", &["get", "patch", "update"]),
        "log" => ("", "v1", "Pod", &["get"]),
        "exec" | "attach" => ("", "v1", "PodExecOptions", &["create", "get"]),
        "portforward" => ("", "v1", "PodPortForwardOptions", &["create", "get"]),
        "proxy" => match parent.kind {
            "Pod" => ("", "v1", "PodProxyOptions", PROXY_VERBS),
            "Service" => ("", "v1", "ServiceProxyOptions", PROXY_VERBS),
            _ => ("", "v1", "NodeProxyOptions", PROXY_VERBS),
        },
        _ => (parent.group, parent.version, parent.kind, &["get"]),
    };
    Subresource {
        name: name.to_string(),
        kind: kind.to_string(),
        group: group.to_string(),
        version: version.to_string(),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
    }
}

fn strings(s: &[&str]) -> Vec<String> {
    s.iter().map(|x| x.to_string()).collect()
}

fn builtin(row: &Row) -> ResourceInfo {
    let storage = if row.group.is_empty() {
        row.plural.to_string()
    } else if row.group == "events.k8s.io" {
        // events.k8s.io/v1 Events are the core Events, seen through another schema.
        "events".to_string()
    } else {
        format!("{}/{}", row.group, row.plural)
    };
    let stored = !matches!(row.group, "authentication.k8s.io" | "authorization.k8s.io")
        && !matches!(row.plural, "bindings" | "componentstatuses");
    ResourceInfo {
        group: row.group.to_string(),
        version: row.version.to_string(),
        kind: row.kind.to_string(),
        plural: row.plural.to_string(),
        singular: row.kind.to_lowercase(),
        short_names: strings(row.short),
        categories: strings(row.cats),
        namespaced: row.namespaced,
        verbs: strings(row.verbs),
        subresources: row.subs.iter().map(|s| subresource_of(row, s)).collect(),
        storage,
        stored,
        custom: false,
        printer_columns: Vec::new(),
        scale: None,
        schema: None,
    }
}

/// The set of served resources: the built-ins plus CRD-defined ones.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    resources: Vec<Arc<ResourceInfo>>,
}

impl Registry {
    /// A registry with every built-in resource.
    pub fn builtin() -> Self {
        Self {
            resources: BUILTINS.iter().map(|r| Arc::new(builtin(r))).collect(),
        }
    }

    /// All resources in table order.
    pub fn all(&self) -> &[Arc<ResourceInfo>] {
        &self.resources
    }

    /// Look up by group, version and plural.
    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceInfo>> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
            .cloned()
    }

    /// Look up by group, version and kind.
    pub fn by_kind(&self, group: &str, version: &str, kind: &str) -> Option<Arc<ResourceInfo>> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.kind == kind)
            .cloned()
    }

    /// Whether any resource of this group/version exists.
    pub fn has_group_version(&self, group: &str, version: &str) -> bool {
        self.resources
            .iter()
            .any(|r| r.group == group && r.version == version)
    }

    /// Served groups (not core) in first-seen order, with their versions in preference order
    /// (the first version listed for a group is its preferred one).
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for r in &self.resources {
            if r.group.is_empty() {
                continue;
            }
            match out.iter_mut().find(|(g, _)| *g == r.group) {
                Some((_, versions)) => {
                    if !versions.contains(&r.version) {
                        versions.push(r.version.clone());
                    }
                }
                None => out.push((r.group.clone(), vec![r.version.clone()])),
            }
        }
        out
    }

    /// Resources of one group/version.
    pub fn in_group_version(&self, group: &str, version: &str) -> Vec<Arc<ResourceInfo>> {
        self.resources
            .iter()
            .filter(|r| r.group == group && r.version == version)
            .cloned()
            .collect()
    }

    /// Add or replace a custom resource row (keyed by group/version/plural).
    pub fn upsert(&mut self, info: ResourceInfo) {
        let info = Arc::new(info);
        match self
            .resources
            .iter_mut()
            .find(|r| r.group == info.group && r.version == info.version && r.plural == info.plural)
        {
            Some(slot) => *slot = info,
            None => self.resources.push(info),
        }
    }

    /// Remove every custom row of `group` with `plural` (all versions).
    pub fn remove_custom(&mut self, group: &str, plural: &str) {
        self.resources
            .retain(|r| !(r.custom && r.group == group && r.plural == plural));
    }

    /// Short names per group/resource, to detect clashes (used in tests).
    pub fn short_name_index(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        for r in &self.resources {
            for s in &r.short_names {
                m.insert(s.clone(), r.group_resource());
            }
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_names() {
        let reg = Registry::builtin();
        let pods = reg.get("", "v1", "pods").expect("pods served");
        assert_eq!(
            pods.key(Some("default"), "web"),
            "/registry/pods/default/web"
        );
        assert_eq!(pods.api_version(), "v1");
        let deploy = reg
            .by_kind("apps", "v1", "Deployment")
            .expect("deployments served");
        assert_eq!(
            deploy.key_prefix_in(Some("a")),
            "/registry/apps/deployments/a/"
        );
        assert_eq!(deploy.group_resource(), "deployments.apps");
        let ns = reg.get("", "v1", "namespaces").expect("namespaces served");
        assert_eq!(
            ns.key(Some("x"), "kube-system"),
            "/registry/namespaces/kube-system"
        );
        assert!(!ns.has_verb("deletecollection"));
        assert_eq!(
            deploy.subresource("scale").map(|s| s.kind.as_str()),
            Some("Scale")
        );
        for (plural, kind) in [
            ("pods", "PodProxyOptions"),
            ("services", "ServiceProxyOptions"),
            ("nodes", "NodeProxyOptions"),
        ] {
            let proxy = reg
                .get("", "v1", plural)
                .and_then(|r| r.subresource("proxy").cloned())
                .expect("proxy subresource");
            assert_eq!(proxy.kind, kind);
            assert_eq!(proxy.verbs, ["create", "delete", "get", "patch", "update"]);
        }
    }

    #[test]
    fn versions_share_storage() {
        let reg = Registry::builtin();
        let v1 = reg
            .get("autoscaling", "v1", "horizontalpodautoscalers")
            .expect("v1");
        let v2 = reg
            .get("autoscaling", "v2", "horizontalpodautoscalers")
            .expect("v2");
        assert_eq!(v1.key_prefix(), v2.key_prefix());
        let groups = reg.groups();
        let autoscaling = groups
            .iter()
            .find(|(g, _)| g == "autoscaling")
            .expect("group");
        assert_eq!(autoscaling.1, vec!["v2".to_string(), "v1".to_string()]);
    }

    #[test]
    fn short_names_unique_except_events() {
        let reg = Registry::builtin();
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        for r in reg.all() {
            for s in &r.short_names {
                if let Some(prev) = seen.insert(s.clone(), r.plural.clone()) {
                    assert_eq!(prev, r.plural, "short name {s} used twice");
                }
            }
        }
    }
}

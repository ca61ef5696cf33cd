//! Server-side table printing (`kubectl get`), with upstream's columns per resource.

use serde_json::{Value, json};

use crate::meta::{self, age, format_time, meta_str, parse_time};

/// A column definition: name, type, priority (0 shown always, 1 with `-o wide`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    /// Header.
    pub name: String,
    /// `string`, `integer`, `date`, …
    pub kind: &'static str,
    /// 0 or 1.
    pub priority: u8,
}

fn col(name: &str, kind: &'static str, priority: u8) -> Column {
    Column {
        name: name.to_string(),
        kind,
        priority,
    }
}

fn s(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

fn at<'a>(o: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(o, |cur, seg| cur.get(seg))
}

fn int(o: &Value, path: &str) -> i64 {
    at(o, path).and_then(Value::as_i64).unwrap_or(0)
}

fn arr<'a>(o: &'a Value, path: &str) -> &'a [Value] {
    at(o, path)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn or_none(x: String) -> String {
    if x.is_empty() { "<none>".into() } else { x }
}

fn join_map(m: Option<&Value>) -> String {
    m.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn selector_string(sel: Option<&Value>) -> String {
    let Some(sel) = sel else { return String::new() };
    let mut parts = Vec::new();
    if sel.get("matchLabels").is_some() || sel.get("matchExpressions").is_some() {
        if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in m {
                parts.push(format!("{k}={}", v.as_str().unwrap_or_default()));
            }
        }
        for e in sel
            .get("matchExpressions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = s(e.get("key"));
            let vals: Vec<String> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|a| a.iter().map(|v| s(Some(v))).collect())
                .unwrap_or_default();
            parts.push(match s(e.get("operator")).as_str() {
                "In" => format!("{key} in ({})", vals.join(",")),
                "NotIn" => format!("{key} notin ({})", vals.join(",")),
                "Exists" => key,
                _ => format!("!{key}"),
            });
        }
        parts.join(",")
    } else {
        join_map(Some(sel))
    }
}

fn containers_images(template_spec: Option<&Value>) -> (String, String) {
    let cs = template_spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array);
    let names: Vec<String> = cs.into_iter().flatten().map(|c| s(c.get("name"))).collect();
    let images: Vec<String> = cs
        .into_iter()
        .flatten()
        .map(|c| s(c.get("image")))
        .collect();
    (names.join(","), images.join(","))
}

fn since(ts: Option<&Value>, now: jiff::Timestamp) -> String {
    match ts.and_then(Value::as_str).and_then(parse_time) {
        Some(t) => meta::human_duration(std::time::Duration::from_secs(
            now.duration_since(t).as_secs().max(0) as u64,
        )),
        None => "<none>".into(),
    }
}

/// Columns and cell function for a resource kind.
pub fn columns(group: &str, kind: &str) -> Vec<Column> {
    let c = col;
    match (group, kind) {
        ("", "Pod") => vec![
            c("Name", "string", 0),
            c("Ready", "string", 0),
            c("Status", "string", 0),
            c("Restarts", "string", 0),
            c("Age", "string", 0),
            c("IP", "string", 1),
            c("Node", "string", 1),
            c("Nominated Node", "string", 1),
            c("Readiness Gates", "string", 1),
        ],
        ("", "Node") => vec![
            c("Name", "string", 0),
            c("Status", "string", 0),
            c("Roles", "string", 0),
            c("Age", "string", 0),
            c("Version", "string", 0),
            c("Internal-IP", "string", 1),
            c("External-IP", "string", 1),
            c("OS-Image", "string", 1),
            c("Kernel-Version", "string", 1),
            c("Container-Runtime", "string", 1),
        ],
        ("", "Namespace") => vec![
            c("Name", "string", 0),
            c("Status", "string", 0),
            c("Age", "string", 0),
        ],
        ("", "Service") => vec![
            c("Name", "string", 0),
            c("Type", "string", 0),
            c("Cluster-IP", "string", 0),
            c("External-IP", "string", 0),
            c("Port(s)", "string", 0),
            c("Age", "string", 0),
            c("Selector", "string", 1),
        ],
        ("", "Endpoints") => vec![
            c("Name", "string", 0),
            c("Endpoints", "string", 0),
            c("Age", "string", 0),
        ],
        ("discovery.k8s.io", "EndpointSlice") => vec![
            c("Name", "string", 0),
            c("AddressType", "string", 0),
            c("Ports", "string", 0),
            c("Endpoints", "string", 0),
            c("Age", "string", 0),
        ],
        ("apps", "Deployment") => vec![
            c("Name", "string", 0),
            c("Ready", "string", 0),
            c("Up-to-date", "integer", 0),
            c("Available", "integer", 0),
            c("Age", "string", 0),
            c("Containers", "string", 1),
            c("Images", "string", 1),
            c("Selector", "string", 1),
        ],
        ("apps", "ReplicaSet") | ("", "ReplicationController") => vec![
            c("Name", "string", 0),
            c("Desired", "integer", 0),
            c("Current", "integer", 0),
            c("Ready", "integer", 0),
            c("Age", "string", 0),
            c("Containers", "string", 1),
            c("Images", "string", 1),
            c("Selector", "string", 1),
        ],
        ("apps", "StatefulSet") => vec![
            c("Name", "string", 0),
            c("Ready", "string", 0),
            c("Age", "string", 0),
            c("Containers", "string", 1),
            c("Images", "string", 1),
        ],
        ("apps", "DaemonSet") => vec![
            c("Name", "string", 0),
            c("Desired", "integer", 0),
            c("Current", "integer", 0),
            c("Ready", "integer", 0),
            c("Up-to-date", "integer", 0),
            c("Available", "integer", 0),
            c("Node Selector", "string", 0),
            c("Age", "string", 0),
            c("Containers", "string", 1),
            c("Images", "string", 1),
            c("Selector", "string", 1),
        ],
        ("apps", "ControllerRevision") => vec![
            c("Name", "string", 0),
            c("Controller", "string", 0),
            c("Revision", "integer", 0),
            c("Age", "string", 0),
        ],
        ("batch", "Job") => vec![
            c("Name", "string", 0),
            c("Status", "string", 0),
            c("Completions", "string", 0),
            c("Duration", "string", 0),
            c("Age", "string", 0),
            c("Containers", "string", 1),
            c("Images", "string", 1),
            c("Selector", "string", 1),
        ],
        ("batch", "CronJob") => vec![
            c("Name", "string", 0),
            c("Schedule", "string", 0),
            c("Timezone", "string", 0),
            c("Suspend", "boolean", 0),
            c("Active", "integer", 0),
            c("Last Schedule", "string", 0),
            c("Age", "string", 0),
            c("Containers", "string", 1),
            c("Images", "string", 1),
            c("Selector", "string", 1),
        ],
        ("", "ConfigMap") => vec![
            c("Name", "string", 0),
            c("Data", "integer", 0),
            c("Age", "string", 0),
        ],
        ("", "ComponentStatus") => vec![
            c("Name", "string", 0),
            c("Status", "string", 0),
            c("Message", "string", 0),
            c("Error", "string", 0),
        ],
        ("", "Secret") => vec![
            c("Name", "string", 0),
            c("Type", "string", 0),
            c("Data", "integer", 0),
            c("Age", "string", 0),
        ],
        ("", "ServiceAccount") => vec![
            c("Name", "string", 0),
            c("Secrets", "string", 0),
            c("Age", "string", 0),
        ],
        ("", "PersistentVolume") => vec![
            c("Name", "string", 0),
            c("Capacity", "string", 0),
            c("Access Modes", "string", 0),
            c("Reclaim Policy", "string", 0),
            c("Status", "string", 0),
            c("Claim", "string", 0),
            c("StorageClass", "string", 0),
            c("VolumeAttributesClass", "string", 0),
            c("Reason", "string", 0),
            c("Age", "string", 0),
            c("VolumeMode", "string", 1),
        ],
        ("", "PersistentVolumeClaim") => vec![
            c("Name", "string", 0),
            c("Status", "string", 0),
            c("Volume", "string", 0),
            c("Capacity", "string", 0),
            c("Access Modes", "string", 0),
            c("StorageClass", "string", 0),
            c("VolumeAttributesClass", "string", 0),
            c("Age", "string", 0),
            c("VolumeMode", "string", 1),
        ],
        ("storage.k8s.io", "StorageClass") => vec![
            c("Name", "string", 0),
            c("Provisioner", "string", 0),
            c("ReclaimPolicy", "string", 0),
            c("VolumeBindingMode", "string", 0),
            c("AllowVolumeExpansion", "string", 0),
            c("Age", "string", 0),
        ],
        ("", "Event") => vec![
            c("Last Seen", "string", 0),
            c("Type", "string", 0),
            c("Reason", "string", 0),
            c("Object", "string", 0),
            c("Subobject", "string", 1),
            c("Source", "string", 1),
            c("Message", "string", 0),
            c("First Seen", "string", 1),
            c("Count", "string", 1),
            c("Name", "string", 1),
        ],
        ("networking.k8s.io", "Ingress") => vec![
            c("Name", "string", 0),
            c("Class", "string", 0),
            c("Hosts", "string", 0),
            c("Address", "string", 0),
            c("Ports", "string", 0),
            c("Age", "string", 0),
        ],
        ("networking.k8s.io", "IngressClass") => vec![
            c("Name", "string", 0),
            c("Controller", "string", 0),
            c("Parameters", "string", 0),
            c("Age", "string", 0),
        ],
        ("networking.k8s.io", "NetworkPolicy") => vec![
            c("Name", "string", 0),
            c("Pod-Selector", "string", 0),
            c("Age", "string", 0),
        ],
        ("coordination.k8s.io", "Lease") => vec![
            c("Name", "string", 0),
            c("Holder", "string", 0),
            c("Age", "string", 0),
        ],
        ("policy", "PodDisruptionBudget") => vec![
            c("Name", "string", 0),
            c("Min Available", "string", 0),
            c("Max Unavailable", "string", 0),
            c("Allowed Disruptions", "integer", 0),
            c("Age", "string", 0),
        ],
        ("autoscaling", "HorizontalPodAutoscaler") => vec![
            c("Name", "string", 0),
            c("Reference", "string", 0),
            c("Targets", "string", 0),
            c("MinPods", "string", 0),
            c("MaxPods", "integer", 0),
            c("Replicas", "integer", 0),
            c("Age", "string", 0),
        ],
        ("scheduling.k8s.io", "PriorityClass") => vec![
            c("Name", "string", 0),
            c("Value", "integer", 0),
            c("Global-Default", "boolean", 0),
            c("Age", "string", 0),
            c("PreemptionPolicy", "string", 0),
        ],
        ("node.k8s.io", "RuntimeClass") => vec![
            c("Name", "string", 0),
            c("Handler", "string", 0),
            c("Age", "string", 0),
        ],
        ("certificates.k8s.io", "CertificateSigningRequest") => vec![
            c("Name", "string", 0),
            c("Age", "string", 0),
            c("SignerName", "string", 0),
            c("Requestor", "string", 0),
            c("RequestedDuration", "string", 0),
            c("Condition", "string", 0),
        ],
        _ => vec![c("Name", "string", 0), c("Created At", "date", 0)],
    }
}

fn pod_cells(o: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let statuses = arr(o, "status.containerStatuses");
    let total = arr(o, "spec.containers").len();
    let ready = statuses
        .iter()
        .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
        .count();
    let mut restarts = 0i64;
    let mut last_restart: Option<jiff::Timestamp> = None;
    let mut reason = s(at(o, "status.reason"));
    if reason.is_empty() {
        reason = s(at(o, "status.phase"));
    }
    let inits = arr(o, "status.initContainerStatuses");
    let mut initializing = false;
    for (i, c) in inits.iter().enumerate() {
        restarts += int(c, "restartCount");
        if let Some(t) = at(c, "state.terminated") {
            if int(t, "exitCode") == 0 {
                continue;
            }
            reason = match t.get("reason").and_then(Value::as_str) {
                Some(r) if !r.is_empty() => format!("Init:{r}"),
                _ => format!("Init:ExitCode:{}", int(t, "exitCode")),
            };
        } else if let Some(r) = at(c, "state.waiting.reason")
            .and_then(Value::as_str)
            .filter(|r| !r.is_empty() && *r != "PodInitializing")
        {
            reason = format!("Init:{r}");
        } else {
            reason = format!("Init:{i}/{}", arr(o, "spec.initContainers").len());
        }
        initializing = true;
        break;
    }
    if !initializing {
        restarts = 0;
        let mut has_running = false;
        for c in statuses.iter().rev() {
            restarts += int(c, "restartCount");
            if let Some(t) = at(c, "lastState.terminated.finishedAt")
                .and_then(Value::as_str)
                .and_then(parse_time)
            {
                last_restart = Some(last_restart.map_or(t, |l: jiff::Timestamp| l.max(t)));
            }
            if let Some(r) = at(c, "state.waiting.reason")
                .and_then(Value::as_str)
                .filter(|r| !r.is_empty())
            {
                reason = r.to_string();
            } else if let Some(t) = at(c, "state.terminated") {
                reason = match t.get("reason").and_then(Value::as_str) {
                    Some(r) if !r.is_empty() => r.to_string(),
                    _ if int(t, "signal") != 0 => format!("Signal:{}", int(t, "signal")),
                    _ => format!("ExitCode:{}", int(t, "exitCode")),
                };
            } else if at(c, "state.running").is_some()
                && c.get("ready").and_then(Value::as_bool) == Some(true)
            {
                has_running = true;
            }
        }
        if reason == "Completed" && has_running {
            reason = "Running".into();
        }
    }
    if meta::is_deleting(o) {
        reason = if s(at(o, "status.reason")) == "NodeLost" {
            "Unknown".into()
        } else {
            "Terminating".into()
        };
    }
    let restarts_cell = match last_restart {
        Some(t) if restarts > 0 => format!(
            "{restarts} ({} ago)",
            meta::human_duration(std::time::Duration::from_secs(
                now.duration_since(t).as_secs().max(0) as u64
            ))
        ),
        _ => restarts.to_string(),
    };
    let gates = arr(o, "spec.readinessGates");
    let gates_cell = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let conds = arr(o, "status.conditions");
        let ok = gates
            .iter()
            .filter(|g| {
                conds.iter().any(|c| {
                    c.get("type") == g.get("conditionType") && s(c.get("status")) == "True"
                })
            })
            .count();
        format!("{ok}/{}", gates.len())
    };
    vec![
        json!(meta::name(o)),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts_cell),
        json!(age(o, now)),
        json!(or_none(s(at(o, "status.podIP")))),
        json!(or_none(s(at(o, "spec.nodeName")))),
        json!(or_none(s(at(o, "status.nominatedNodeName")))),
        json!(gates_cell),
    ]
}

fn node_cells(o: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let conds = arr(o, "status.conditions");
    let mut status: Vec<String> = Vec::new();
    match conds.iter().find(|c| s(c.get("type")) == "Ready") {
        Some(c) if s(c.get("status")) == "True" => status.push("Ready".into()),
        Some(_) => status.push("NotReady".into()),
        None => status.push("Unknown".into()),
    }
    if at(o, "spec.unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push("SchedulingDisabled".into());
    }
    let mut roles: Vec<String> = meta::labels(o)
        .keys()
        .filter_map(|k| {
            k.strip_prefix("node-role.kubernetes.io/")
                .map(str::to_string)
        })
        .filter(|r| !r.is_empty())
        .collect();
    if let Some(r) = meta::labels(o).get("kubernetes.io/role") {
        roles.push(r.clone());
    }
    let addr = |t: &str| {
        arr(o, "status.addresses")
            .iter()
            .find(|a| s(a.get("type")) == t)
            .map(|a| s(a.get("address")))
            .unwrap_or_default()
    };
    vec![
        json!(meta::name(o)),
        json!(status.join(",")),
        json!(or_none(roles.join(","))),
        json!(age(o, now)),
        json!(s(at(o, "status.nodeInfo.kubeletVersion"))),
        json!(or_none(addr("InternalIP"))),
        json!(or_none(addr("ExternalIP"))),
        json!(or_none(s(at(o, "status.nodeInfo.osImage")))),
        json!(or_none(s(at(o, "status.nodeInfo.kernelVersion")))),
        json!(or_none(s(at(o, "status.nodeInfo.containerRuntimeVersion")))),
    ]
}

fn service_cells(o: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let ty = at(o, "spec.type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    let mut external: Vec<String> = arr(o, "spec.externalIPs")
        .iter()
        .map(|v| s(Some(v)))
        .collect();
    match ty.as_str() {
        "LoadBalancer" => {
            for i in arr(o, "status.loadBalancer.ingress") {
                let v = s(i.get("ip"));
                external.push(if v.is_empty() {
                    s(i.get("hostname"))
                } else {
                    v
                });
            }
            if external.is_empty() {
                external.push("<pending>".into());
            }
        }
        "ExternalName" => external = vec![s(at(o, "spec.externalName"))],
        _ => {}
    }
    let ports: Vec<String> = arr(o, "spec.ports")
        .iter()
        .map(|p| {
            let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
            match p.get("nodePort").and_then(Value::as_i64) {
                Some(np) if np != 0 => format!("{}:{np}/{proto}", int(p, "port")),
                _ => format!("{}/{proto}", int(p, "port")),
            }
        })
        .collect();
    let cluster_ip = s(at(o, "spec.clusterIP"));
    vec![
        json!(meta::name(o)),
        json!(ty),
        json!(if cluster_ip.is_empty() {
            "<none>".into()
        } else {
            cluster_ip
        }),
        json!(or_none(external.join(","))),
        json!(or_none(ports.join(","))),
        json!(age(o, now)),
        json!(or_none(join_map(at(o, "spec.selector")))),
    ]
}

fn endpoints_cells(o: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let mut eps = Vec::new();
    for sub in arr(o, "subsets") {
        let ports: Vec<i64> = arr(sub, "ports").iter().map(|p| int(p, "port")).collect();
        for a in arr(sub, "addresses") {
            if ports.is_empty() {
                eps.push(s(a.get("ip")));
            }
            for p in &ports {
                eps.push(format!("{}:{p}", s(a.get("ip"))));
            }
        }
    }
    let shown = if eps.len() > 3 {
        format!("{} + {} more...", eps[..3].join(","), eps.len() - 3)
    } else {
        eps.join(",")
    };
    vec![
        json!(meta::name(o)),
        json!(or_none(shown)),
        json!(age(o, now)),
    ]
}

fn count_map(v: Option<&Value>) -> i64 {
    v.and_then(Value::as_object).map_or(0, |m| m.len() as i64)
}

fn access_modes(v: &[Value]) -> String {
    v.iter()
        .map(|m| {
            match m.as_str().unwrap_or_default() {
                "ReadWriteOnce" => "RWO",
                "ReadOnlyMany" => "ROX",
                "ReadWriteMany" => "RWX",
                "ReadWriteOncePod" => "RWOP",
                other => other,
            }
            .to_string()
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The cells of one row (as many as [`columns`] returns).
pub fn cells(group: &str, kind: &str, o: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let name = json!(meta::name(o));
    let a = json!(age(o, now));
    match (group, kind) {
        ("", "Pod") => pod_cells(o, now),
        ("", "Node") => node_cells(o, now),
        ("", "Namespace") => vec![
            name,
            json!(
                at(o, "status.phase")
                    .and_then(Value::as_str)
                    .unwrap_or("Active")
            ),
            a,
        ],
        ("", "Service") => service_cells(o, now),
        ("", "Endpoints") => endpoints_cells(o, now),
        ("discovery.k8s.io", "EndpointSlice") => {
            let ports: Vec<String> = arr(o, "ports")
                .iter()
                .map(|p| int(p, "port").to_string())
                .collect();
            let addrs: Vec<String> = arr(o, "endpoints")
                .iter()
                .flat_map(|e| arr(e, "addresses").iter().map(|a| s(Some(a))))
                .collect();
            vec![
                name,
                json!(s(o.get("addressType"))),
                json!(if ports.is_empty() {
                    "<unset>".into()
                } else {
                    ports.join(",")
                }),
                json!(if addrs.is_empty() {
                    "<unset>".into()
                } else {
                    addrs.join(",")
                }),
                a,
            ]
        }
        ("apps", "Deployment") => {
            let (c, i) = containers_images(at(o, "spec.template.spec"));
            let desired = at(o, "spec.replicas").and_then(Value::as_i64).unwrap_or(1);
            vec![
                name,
                json!(format!("{}/{desired}", int(o, "status.readyReplicas"))),
                json!(int(o, "status.updatedReplicas")),
                json!(int(o, "status.availableReplicas")),
                a,
                json!(c),
                json!(i),
                json!(selector_string(at(o, "spec.selector"))),
            ]
        }
        ("apps", "ReplicaSet") | ("", "ReplicationController") => {
            let (c, i) = containers_images(at(o, "spec.template.spec"));
            let desired = at(o, "spec.replicas").and_then(Value::as_i64).unwrap_or(1);
            vec![
                name,
                json!(desired),
                json!(int(o, "status.replicas")),
                json!(int(o, "status.readyReplicas")),
                a,
                json!(c),
                json!(i),
                json!(selector_string(at(o, "spec.selector"))),
            ]
        }
        ("apps", "StatefulSet") => {
            let (c, i) = containers_images(at(o, "spec.template.spec"));
            let desired = at(o, "spec.replicas").and_then(Value::as_i64).unwrap_or(1);
            vec![
                name,
                json!(format!("{}/{desired}", int(o, "status.readyReplicas"))),
                a,
                json!(c),
                json!(i),
            ]
        }
        ("apps", "DaemonSet") => {
            let (c, i) = containers_images(at(o, "spec.template.spec"));
            vec![
                name,
                json!(int(o, "status.desiredNumberScheduled")),
                json!(int(o, "status.currentNumberScheduled")),
                json!(int(o, "status.numberReady")),
                json!(int(o, "status.updatedNumberScheduled")),
                json!(int(o, "status.numberAvailable")),
                json!(or_none(join_map(at(o, "spec.template.spec.nodeSelector")))),
                a,
                json!(c),
                json!(i),
                json!(selector_string(at(o, "spec.selector"))),
            ]
        }
        ("apps", "ControllerRevision") => {
            let owner = arr(o, "metadata.ownerReferences")
                .iter()
                .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true));
            let controller = owner
                .map(|r| format!("{}/{}", s(r.get("kind")).to_lowercase(), s(r.get("name"))))
                .unwrap_or_else(|| "<none>".into());
            vec![name, json!(controller), json!(int(o, "revision")), a]
        }
        ("batch", "Job") => {
            let (c, i) = containers_images(at(o, "spec.template.spec"));
            let completions = at(o, "spec.completions").and_then(Value::as_i64);
            let succeeded = int(o, "status.succeeded");
            let comp = match completions {
                Some(n) => format!("{succeeded}/{n}"),
                None => format!(
                    "{succeeded}/1 of {}",
                    at(o, "spec.parallelism")
                        .and_then(Value::as_i64)
                        .unwrap_or(1)
                ),
            };
            let conds = arr(o, "status.conditions");
            let has = |t: &str| {
                conds
                    .iter()
                    .any(|c| s(c.get("type")) == t && s(c.get("status")) == "True")
            };
            let status = if has("Failed") {
                "Failed"
            } else if has("Complete") {
                "Complete"
            } else if has("Suspended") {
                "Suspended"
            } else if has("FailureTarget") {
                "FailureTarget"
            } else if has("SuccessCriteriaMet") {
                "SuccessCriteriaMet"
            } else {
                "Running"
            };
            let duration = match (
                at(o, "status.startTime")
                    .and_then(Value::as_str)
                    .and_then(parse_time),
                at(o, "status.completionTime")
                    .and_then(Value::as_str)
                    .and_then(parse_time),
            ) {
                (Some(st), Some(ct)) => meta::human_duration(std::time::Duration::from_secs(
                    ct.duration_since(st).as_secs().max(0) as u64,
                )),
                (Some(st), None) => meta::human_duration(std::time::Duration::from_secs(
                    now.duration_since(st).as_secs().max(0) as u64,
                )),
                _ => String::new(),
            };
            vec![
                name,
                json!(status),
                json!(comp),
                json!(duration),
                a,
                json!(c),
                json!(i),
                json!(selector_string(at(o, "spec.selector"))),
            ]
        }
        ("batch", "CronJob") => {
            let (c, i) = containers_images(at(o, "spec.jobTemplate.spec.template.spec"));
            vec![
                name,
                json!(s(at(o, "spec.schedule"))),
                json!(or_none(s(at(o, "spec.timeZone")))),
                json!(
                    at(o, "spec.suspend")
                        .and_then(Value::as_bool)
                        .unwrap_or(false)
                ),
                json!(arr(o, "status.active").len()),
                json!(since(at(o, "status.lastScheduleTime"), now)),
                a,
                json!(c),
                json!(i),
                json!(selector_string(at(o, "spec.jobTemplate.spec.selector"))),
            ]
        }
        ("", "ConfigMap") => vec![
            name,
            json!(count_map(o.get("data")) + count_map(o.get("binaryData"))),
            a,
        ],
        ("", "ComponentStatus") => {
            // As upstream's printer: the Healthy condition decides, Unknown without one.
            let healthy = arr(o, "conditions")
                .iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some("Healthy"));
            let status = match healthy
                .and_then(|c| c.get("status"))
                .and_then(Value::as_str)
            {
                Some("True") => "Healthy",
                Some(_) => "Unhealthy",
                None => "Unknown",
            };
            vec![
                name,
                json!(status),
                json!(s(healthy.and_then(|c| c.get("message")))),
                json!(s(healthy.and_then(|c| c.get("error")))),
            ]
        }
        ("", "Secret") => vec![
            name,
            json!(s(o.get("type"))),
            json!(count_map(o.get("data")) + count_map(o.get("stringData"))),
            a,
        ],
        ("", "ServiceAccount") => vec![name, json!(arr(o, "secrets").len().to_string()), a],
        ("", "PersistentVolume") => {
            let claim = at(o, "spec.claimRef")
                .map(|c| format!("{}/{}", s(c.get("namespace")), s(c.get("name"))))
                .unwrap_or_default();
            vec![
                name,
                json!(s(at(o, "spec.capacity.storage"))),
                json!(access_modes(arr(o, "spec.accessModes"))),
                json!(
                    at(o, "spec.persistentVolumeReclaimPolicy")
                        .and_then(Value::as_str)
                        .unwrap_or("Retain")
                ),
                json!(s(at(o, "status.phase"))),
                json!(claim),
                json!(s(at(o, "spec.storageClassName"))),
                json!(or_none(s(at(o, "spec.volumeAttributesClassName")))),
                json!(s(at(o, "status.reason"))),
                a,
                json!(
                    at(o, "spec.volumeMode")
                        .and_then(Value::as_str)
                        .unwrap_or("Filesystem")
                ),
            ]
        }
        ("", "PersistentVolumeClaim") => {
            let phase = if meta::is_deleting(o) {
                "Terminating".to_string()
            } else {
                s(at(o, "status.phase"))
            };
            vec![
                name,
                json!(phase),
                json!(s(at(o, "spec.volumeName"))),
                json!(s(at(o, "status.capacity.storage"))),
                json!(access_modes(arr(o, "status.accessModes"))),
                json!(s(at(o, "spec.storageClassName"))),
                json!(or_none(s(at(o, "spec.volumeAttributesClassName")))),
                a,
                json!(
                    at(o, "spec.volumeMode")
                        .and_then(Value::as_str)
                        .unwrap_or("Filesystem")
                ),
            ]
        }
        ("storage.k8s.io", "StorageClass") => {
            let mut n = meta::name(o).to_string();
            if meta::annotations(o)
                .get("storageclass.kubernetes.io/is-default-class")
                .map(String::as_str)
                == Some("true")
            {
                n.push_str(" (default)");
            }
            vec![
                json!(n),
                json!(s(o.get("provisioner"))),
                json!(
                    o.get("reclaimPolicy")
                        .and_then(Value::as_str)
                        .unwrap_or("Delete")
                ),
                json!(
                    o.get("volumeBindingMode")
                        .and_then(Value::as_str)
                        .unwrap_or("Immediate")
                ),
                json!(
                    o.get("allowVolumeExpansion")
                        .and_then(Value::as_bool)
                        .unwrap_or(false)
                        .to_string()
                ),
                a,
            ]
        }
        ("", "Event") => {
            let last = o
                .get("lastTimestamp")
                .or_else(|| o.get("eventTime"))
                .or_else(|| at(o, "metadata.creationTimestamp"));
            let first = o
                .get("firstTimestamp")
                .or_else(|| o.get("eventTime"))
                .or_else(|| at(o, "metadata.creationTimestamp"));
            let obj = format!(
                "{}/{}",
                s(at(o, "involvedObject.kind")).to_lowercase(),
                s(at(o, "involvedObject.name"))
            );
            let source = {
                let comp = s(at(o, "source.component"));
                let comp = if comp.is_empty() {
                    s(o.get("reportingComponent"))
                } else {
                    comp
                };
                let host = s(at(o, "source.host"));
                if host.is_empty() {
                    comp
                } else {
                    format!("{comp}, {host}")
                }
            };
            vec![
                json!(since(last, now)),
                json!(s(o.get("type"))),
                json!(s(o.get("reason"))),
                json!(obj),
                json!(s(at(o, "involvedObject.fieldPath"))),
                json!(source),
                json!(s(o.get("message")).trim().to_string()),
                json!(since(first, now)),
                json!(
                    o.get("count")
                        .and_then(Value::as_i64)
                        .unwrap_or(1)
                        .to_string()
                ),
                name,
            ]
        }
        ("networking.k8s.io", "Ingress") => {
            let hosts: Vec<String> = arr(o, "spec.rules")
                .iter()
                .map(|r| {
                    r.get("host")
                        .and_then(Value::as_str)
                        .unwrap_or("*")
                        .to_string()
                })
                .collect();
            let addr: Vec<String> = arr(o, "status.loadBalancer.ingress")
                .iter()
                .map(|i| {
                    let ip = s(i.get("ip"));
                    if ip.is_empty() {
                        s(i.get("hostname"))
                    } else {
                        ip
                    }
                })
                .collect();
            let ports = if arr(o, "spec.tls").is_empty() {
                "80"
            } else {
                "80, 443"
            };
            vec![
                name,
                json!(or_none(s(at(o, "spec.ingressClassName")))),
                json!(if hosts.is_empty() {
                    "*".into()
                } else {
                    hosts.join(",")
                }),
                json!(addr.join(",")),
                json!(ports),
                a,
            ]
        }
        ("networking.k8s.io", "IngressClass") => {
            let params = at(o, "spec.parameters")
                .map(|p| format!("{}/{}", s(p.get("kind")), s(p.get("name"))))
                .unwrap_or_else(|| "<none>".into());
            vec![name, json!(s(at(o, "spec.controller"))), json!(params), a]
        }
        ("networking.k8s.io", "NetworkPolicy") => vec![
            name,
            json!(or_none(selector_string(at(o, "spec.podSelector")))),
            a,
        ],
        ("coordination.k8s.io", "Lease") => vec![name, json!(s(at(o, "spec.holderIdentity"))), a],
        ("policy", "PodDisruptionBudget") => vec![
            name,
            json!(or_na(at(o, "spec.minAvailable"))),
            json!(or_na(at(o, "spec.maxUnavailable"))),
            json!(int(o, "status.disruptionsAllowed")),
            a,
        ],
        ("autoscaling", "HorizontalPodAutoscaler") => {
            let r = at(o, "spec.scaleTargetRef")
                .map(|r| format!("{}/{}", s(r.get("kind")), s(r.get("name"))))
                .unwrap_or_default();
            vec![
                name,
                json!(r),
                json!("<unknown>"),
                json!(
                    at(o, "spec.minReplicas")
                        .and_then(Value::as_i64)
                        .unwrap_or(1)
                        .to_string()
                ),
                json!(int(o, "spec.maxReplicas")),
                json!(int(o, "status.currentReplicas")),
                a,
            ]
        }
        ("scheduling.k8s.io", "PriorityClass") => vec![
            name,
            json!(int(o, "value")),
            json!(
                o.get("globalDefault")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
            ),
            a,
            json!(
                o.get("preemptionPolicy")
                    .and_then(Value::as_str)
                    .unwrap_or("PreemptLowerPriority")
            ),
        ],
        ("node.k8s.io", "RuntimeClass") => vec![name, json!(s(o.get("handler"))), a],
        ("certificates.k8s.io", "CertificateSigningRequest") => {
            let conds: Vec<String> = arr(o, "status.conditions")
                .iter()
                .map(|c| s(c.get("type")))
                .collect();
            let cond = if conds.is_empty() {
                "Pending".to_string()
            } else {
                conds.join(",")
            };
            let dur = at(o, "spec.expirationSeconds")
                .and_then(Value::as_i64)
                .map(|d| meta::human_duration(std::time::Duration::from_secs(d.max(0) as u64)))
                .unwrap_or_else(|| "<none>".into());
            vec![
                name,
                a,
                json!(s(at(o, "spec.signerName"))),
                json!(s(at(o, "spec.username"))),
                json!(dur),
                json!(cond),
            ]
        }
        _ => {
            let created = meta_str(o, "creationTimestamp")
                .and_then(parse_time)
                .map(format_time)
                .unwrap_or_default();
            vec![name, json!(created)]
        }
    }
}

fn or_na(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "N/A".into(),
    }
}

/// `columnDefinitions` JSON for columns.
pub fn column_definitions(cols: &[Column]) -> Value {
    Value::Array(
        cols.iter()
            .map(|c| {
                let format = if c.name == "Name" { "name" } else { "" };
                json!({"name": c.name, "type": c.kind, "format": format, "description": c.name, "priority": c.priority})
            })
            .collect(),
    )
}

/// An additionalPrinterColumn of a CRD: evaluate a simple JSONPath (`.spec.replicas`).
pub fn simple_json_path(o: &Value, path: &str) -> Value {
    let p = path
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .trim_start_matches('.');
    if p.is_empty() {
        return Value::Null;
    }
    let mut cur = o;
    for seg in p.split('.') {
        let (field, index) = match seg.split_once('[') {
            Some((f, rest)) => (f, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (seg, None),
        };
        cur = match cur.get(field) {
            Some(v) => v,
            None => return Value::Null,
        };
        if let Some(i) = index {
            cur = match cur.get(i) {
                Some(v) => v,
                None => return Value::Null,
            };
        }
    }
    cur.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> jiff::Timestamp {
        "2026-01-01T00:10:00Z".parse().expect("timestamp")
    }

    #[test]
    fn every_kind_has_as_many_cells_as_columns() {
        let reg = crate::Registry::builtin();
        let o = json!({"metadata": {"name": "x", "creationTimestamp": "2026-01-01T00:00:00Z"}});
        for r in reg.all() {
            assert_eq!(
                columns(&r.group, &r.kind).len(),
                cells(&r.group, &r.kind, &o, now()).len(),
                "{}",
                r.kind
            );
        }
    }

    #[test]
    fn pod_row() {
        let pod = json!({"metadata": {"name": "web", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "n1"},
            "status": {"phase": "Running", "podIP": "10.42.0.5", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 0, "state": {"running": {}}},
                {"name": "b", "ready": false, "restartCount": 2, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                 "lastState": {"terminated": {"finishedAt": "2026-01-01T00:09:00Z"}}}]}});
        let c = cells("", "Pod", &pod, now());
        assert_eq!(c[1], "1/2");
        assert_eq!(c[2], "CrashLoopBackOff");
        assert_eq!(c[3], "2 (60s ago)");
        assert_eq!(c[4], "10m");
        assert_eq!(c[6], "n1");
    }

    #[test]
    fn service_row() {
        let svc = json!({"metadata": {"name": "web"}, "spec": {"type": "NodePort", "clusterIP": "10.43.0.10",
            "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}], "selector": {"app": "web"}}});
        let c = cells("", "Service", &svc, now());
        assert_eq!(c[3], "<none>");
        assert_eq!(c[4], "80:30080/TCP");
        assert_eq!(c[6], "app=web");
    }
}

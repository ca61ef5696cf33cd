//! Defaulting that matches upstream's (clients diff against it) and kind-specific validation
//! (required fields, immutable fields).

use serde_json::{Map, Value, json};

use crate::status::Cause;

mod service;

fn obj_mut<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Map<String, Value>> {
    let m = v.as_object_mut()?;
    let e = m.entry(key).or_insert_with(|| json!({}));
    if e.is_null() {
        *e = json!({});
    }
    e.as_object_mut()
}

fn set_default(m: &mut Map<String, Value>, key: &str, v: Value) {
    if m.get(key).is_none_or(Value::is_null) {
        m.insert(key.to_string(), v);
    }
}

/// Apply upstream's defaults to an object of `group`/`kind` being created.
pub fn apply(group: &str, kind: &str, obj: &mut Value) {
    status_struct(group, kind, obj);
    match (group, kind) {
        ("", "Pod") => {
            if let Some(spec) = obj.get_mut("spec") {
                pod_spec(spec);
                // SetDefaults_Pod: a container's requests default to its limits.
                for key in ["containers", "initContainers"] {
                    if let Some(cs) = spec.get_mut(key).and_then(Value::as_array_mut) {
                        for c in cs {
                            requests_from_limits(c);
                        }
                    }
                }
                // SetDefaults_Pod (not the shared PodSpec defaults): pods only.
                if let Some(m) = spec.as_object_mut() {
                    set_default(m, "enableServiceLinks", json!(true));
                }
            }
            if let Some(status) = obj_mut(obj, "status") {
                set_default(status, "phase", json!("Pending"));
            }
            let qos = qos_class(obj.get("spec"));
            if let Some(status) = obj_mut(obj, "status") {
                set_default(status, "qosClass", json!(qos));
            }
        }
        ("", "PodTemplate") => template(obj.get_mut("template")),
        ("", "ReplicationController") => {
            if let Some(spec) = obj_mut(obj, "spec") {
                set_default(spec, "replicas", json!(1));
                set_default(spec, "minReadySeconds", json!(0));
            }
            // selector defaults to the template labels
            let labels = obj.pointer("/spec/template/metadata/labels").cloned();
            if let (Some(spec), Some(l)) = (obj_mut(obj, "spec"), labels) {
                set_default(spec, "selector", l);
            }
            template(obj.pointer_mut("/spec/template"));
        }
        ("apps", "Deployment") => {
            if let Some(spec) = obj_mut(obj, "spec") {
                set_default(spec, "replicas", json!(1));
                set_default(spec, "revisionHistoryLimit", json!(10));
                set_default(spec, "progressDeadlineSeconds", json!(600));
                set_default(spec, "strategy", json!({}));
                if let Some(st) = spec.get_mut("strategy").and_then(Value::as_object_mut) {
                    set_default(st, "type", json!("RollingUpdate"));
                    if st.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                        set_default(st, "rollingUpdate", json!({}));
                        if let Some(ru) = st.get_mut("rollingUpdate").and_then(Value::as_object_mut)
                        {
                            set_default(ru, "maxUnavailable", json!("25%"));
                            set_default(ru, "maxSurge", json!("25%"));
                        }
                    }
                }
            }
            template(obj.pointer_mut("/spec/template"));
        }
        ("apps", "ReplicaSet") => {
            if let Some(spec) = obj_mut(obj, "spec") {
                set_default(spec, "replicas", json!(1));
            }
            template(obj.pointer_mut("/spec/template"));
        }
        ("apps", "StatefulSet") => {
            if let Some(spec) = obj_mut(obj, "spec") {
                set_default(spec, "replicas", json!(1));
                set_default(spec, "podManagementPolicy", json!("OrderedReady"));
                set_default(spec, "revisionHistoryLimit", json!(10));
                set_default(
                    spec,
                    "updateStrategy",
                    json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
                );
                set_default(
                    spec,
                    "persistentVolumeClaimRetentionPolicy",
                    json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
                );
                if let Some(vcts) = spec
                    .get_mut("volumeClaimTemplates")
                    .and_then(Value::as_array_mut)
                {
                    for v in vcts {
                        if let Some(s) = obj_mut(v, "spec") {
                            set_default(s, "volumeMode", json!("Filesystem"));
                        }
                        if let Some(m) = v.as_object_mut() {
                            set_default(m, "apiVersion", json!("v1"));
                            set_default(m, "kind", json!("PersistentVolumeClaim"));
                        }
                    }
                }
            }
            template(obj.pointer_mut("/spec/template"));
        }
        ("apps", "DaemonSet") => {
            if let Some(spec) = obj_mut(obj, "spec") {
                set_default(spec, "revisionHistoryLimit", json!(10));
                set_default(
                    spec,
                    "updateStrategy",
                    json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
                );
            }
            template(obj.pointer_mut("/spec/template"));
        }
        ("batch", "Job") => {
            job_spec(obj.get_mut("spec"));
        }
        ("batch", "CronJob") => {
            if let Some(spec) = obj_mut(obj, "spec") {
                set_default(spec, "concurrencyPolicy", json!("Allow"));
                set_default(spec, "suspend", json!(false));
                set_default(spec, "successfulJobsHistoryLimit", json!(3));
                set_default(spec, "failedJobsHistoryLimit", json!(1));
            }
            job_spec(obj.pointer_mut("/spec/jobTemplate/spec"));
        }
        ("", "Service") => service(obj),
        ("", "PersistentVolumeClaim") => {
            if let Some(spec) = obj_mut(obj, "spec") {
                set_default(spec, "volumeMode", json!("Filesystem"));
            }
            if let Some(status) = obj_mut(obj, "status") {
                set_default(status, "phase", json!("Pending"));
            }
        }
        ("", "PersistentVolume") => {
            if let Some(spec) = obj_mut(obj, "spec") {
                set_default(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
                set_default(spec, "volumeMode", json!("Filesystem"));
            }
            if let Some(status) = obj_mut(obj, "status") {
                set_default(status, "phase", json!("Pending"));
            }
        }
        ("", "Namespace") => {
            if let Some(spec) = obj_mut(obj, "spec") {
                set_default(spec, "finalizers", json!(["kubernetes"]));
            }
            if let Some(status) = obj_mut(obj, "status") {
                set_default(status, "phase", json!("Active"));
            }
            let name = crate::meta::name(obj).to_string();
            let md = crate::meta::metadata_mut(obj);
            let labels = md.entry("labels").or_insert_with(|| json!({}));
            if let Some(l) = labels.as_object_mut() {
                l.insert("kubernetes.io/metadata.name".into(), json!(name));
            }
        }
        ("", "Secret") => {
            if let Some(m) = obj.as_object_mut() {
                set_default(m, "type", json!("Opaque"));
                // stringData is write-only: merged into data as base64.
                if let Some(Value::Object(sd)) = m.remove("stringData") {
                    use base64::Engine;
                    let data = m.entry("data").or_insert_with(|| json!({}));
                    if let Some(d) = data.as_object_mut() {
                        for (k, v) in sd {
                            let s = v.as_str().unwrap_or_default();
                            d.insert(
                                k,
                                json!(base64::engine::general_purpose::STANDARD.encode(s)),
                            );
                        }
                    }
                }
            }
        }
        ("storage.k8s.io", "StorageClass") => {
            if let Some(m) = obj.as_object_mut() {
                set_default(m, "reclaimPolicy", json!("Delete"));
                set_default(m, "volumeBindingMode", json!("Immediate"));
            }
        }
        ("scheduling.k8s.io", "PriorityClass") => {
            if let Some(m) = obj.as_object_mut() {
                set_default(m, "preemptionPolicy", json!("PreemptLowerPriority"));
            }
        }
        _ => {}
    }
}

fn job_spec(spec: Option<&mut Value>) {
    let Some(spec) = spec.and_then(Value::as_object_mut) else {
        return;
    };
    set_default(spec, "parallelism", json!(1));
    set_default(spec, "backoffLimit", json!(6));
    set_default(spec, "completionMode", json!("NonIndexed"));
    set_default(spec, "suspend", json!(false));
    set_default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
    if spec.get("completions").is_none()
        && spec.get("parallelism").and_then(Value::as_i64) == Some(1)
    {
        spec.insert("completions".into(), json!(1));
    }
    template(spec.get_mut("template"));
}

fn template(t: Option<&mut Value>) {
    if let Some(spec) = t.and_then(|t| t.get_mut("spec")) {
        pod_spec(spec);
    }
}

fn pod_spec(spec: &mut Value) {
    let Some(s) = spec.as_object_mut() else {
        return;
    };
    set_default(s, "restartPolicy", json!("Always"));
    set_default(s, "terminationGracePeriodSeconds", json!(30));
    set_default(s, "dnsPolicy", json!("ClusterFirst"));
    set_default(s, "securityContext", json!({}));
    set_default(s, "schedulerName", json!("default-scheduler"));
    for key in ["containers", "initContainers"] {
        if let Some(cs) = s.get_mut(key).and_then(Value::as_array_mut) {
            for c in cs {
                container(c);
            }
        }
    }
    if let Some(vols) = s.get_mut("volumes").and_then(Value::as_array_mut) {
        for v in vols {
            for (src, field) in [
                ("configMap", "defaultMode"),
                ("secret", "defaultMode"),
                ("downwardAPI", "defaultMode"),
                ("projected", "defaultMode"),
            ] {
                if let Some(m) = v.get_mut(src).and_then(Value::as_object_mut) {
                    set_default(m, field, json!(420));
                }
            }
            if let Some(m) = v.get_mut("hostPath").and_then(Value::as_object_mut) {
                set_default(m, "type", json!(""));
            }
        }
    }
}

fn container(c: &mut Value) {
    let Some(m) = c.as_object_mut() else { return };
    set_default(m, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(m, "terminationMessagePolicy", json!("File"));
    set_default(m, "resources", json!({}));
    let image = m.get("image").and_then(Value::as_str).unwrap_or_default();
    let pull = if image_is_latest(image) {
        "Always"
    } else {
        "IfNotPresent"
    };
    set_default(m, "imagePullPolicy", json!(pull));
    if let Some(ports) = m.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports {
            if let Some(pm) = p.as_object_mut() {
                set_default(pm, "protocol", json!("TCP"));
            }
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = m.get_mut(probe).and_then(Value::as_object_mut) {
            set_default(p, "timeoutSeconds", json!(1));
            set_default(p, "periodSeconds", json!(10));
            set_default(p, "successThreshold", json!(1));
            set_default(p, "failureThreshold", json!(3));
            if let Some(h) = p.get_mut("httpGet").and_then(Value::as_object_mut) {
                set_default(h, "path", json!("/"));
                set_default(h, "scheme", json!("HTTP"));
            }
        }
    }
}

fn requests_from_limits(c: &mut Value) {
    let Some(limits) = c
        .pointer("/resources/limits")
        .and_then(Value::as_object)
        .cloned()
    else {
        return;
    };
    if limits.is_empty() {
        return;
    }
    let Some(res) = c.get_mut("resources").and_then(Value::as_object_mut) else {
        return;
    };
    let req = res.entry("requests").or_insert_with(|| json!({}));
    if let Some(r) = req.as_object_mut() {
        for (k, v) in limits {
            r.entry(k).or_insert(v);
        }
    }
}

/// Whether an image reference uses `:latest` or no tag (upstream pulls those `Always`).
pub fn image_is_latest(image: &str) -> bool {
    if image.contains('@') {
        return false;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, tag)) => tag == "latest",
        None => true,
    }
}

fn qos_class(spec: Option<&Value>) -> &'static str {
    let cs: Vec<&Value> = spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let mut any = false;
    let mut guaranteed = !cs.is_empty();
    for c in cs {
        let req = c.pointer("/resources/requests").and_then(Value::as_object);
        let lim = c.pointer("/resources/limits").and_then(Value::as_object);
        if req.is_some_and(|r| !r.is_empty()) || lim.is_some_and(|l| !l.is_empty()) {
            any = true;
        }
        for r in ["cpu", "memory"] {
            let l = lim.and_then(|l| l.get(r));
            let q = req.and_then(|q| q.get(r)).or(l);
            if l.is_none() || q != l {
                guaranteed = false;
            }
        }
    }
    if guaranteed {
        "Guaranteed"
    } else if any {
        "Burstable"
    } else {
        "BestEffort"
    }
}

fn service(obj: &mut Value) {
    let Some(spec) = obj_mut(obj, "spec") else {
        return;
    };
    set_default(spec, "type", json!("ClusterIP"));
    set_default(spec, "sessionAffinity", json!("None"));
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    if ty != "ExternalName" {
        set_default(spec, "internalTrafficPolicy", json!("Cluster"));
        set_default(spec, "ipFamilies", json!(["IPv4"]));
        set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        set_default(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if ty == "LoadBalancer" {
        set_default(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports {
            if let Some(pm) = p.as_object_mut() {
                set_default(pm, "protocol", json!("TCP"));
                if let Some(port) = pm.get("port").cloned() {
                    set_default(pm, "targetPort", port);
                }
            }
        }
    }
}

/// Kinds whose Go type holds its status as a struct value (not a pointer): upstream always
/// writes `"status": {…}` for them, `{}` when nothing is set yet. Services and Ingresses hold a
/// `loadBalancer` struct inside, written as `{}` too.
const STATUS_STRUCTS: &[(&str, &str)] = &[
    ("", "Pod"),
    ("", "Node"),
    ("", "Namespace"),
    ("", "Service"),
    ("", "PersistentVolume"),
    ("", "PersistentVolumeClaim"),
    ("", "ResourceQuota"),
    ("", "ReplicationController"),
    ("apps", "Deployment"),
    ("apps", "ReplicaSet"),
    ("apps", "StatefulSet"),
    ("apps", "DaemonSet"),
    ("batch", "Job"),
    ("batch", "CronJob"),
    ("autoscaling", "HorizontalPodAutoscaler"),
    ("policy", "PodDisruptionBudget"),
    ("certificates.k8s.io", "CertificateSigningRequest"),
    ("networking.k8s.io", "Ingress"),
    ("storage.k8s.io", "VolumeAttachment"),
    ("flowcontrol.apiserver.k8s.io", "FlowSchema"),
    ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration"),
];

fn status_struct(group: &str, kind: &str, obj: &mut Value) {
    if !STATUS_STRUCTS.contains(&(group, kind)) {
        return;
    }
    let Some(status) = obj_mut(obj, "status") else {
        return;
    };
    if matches!(
        (group, kind),
        ("", "Service") | ("networking.k8s.io", "Ingress")
    ) {
        set_default(status, "loadBalancer", json!({}));
    }
}

fn required(causes: &mut Vec<Cause>, obj: &Value, pointer: &str, field: &str) {
    let v = obj.pointer(pointer);
    let missing = match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        _ => false,
    };
    if missing {
        causes.push(Cause::new("FieldValueRequired", field, "Required value"));
    }
}

fn immutable(
    causes: &mut Vec<Cause>,
    obj: &Value,
    old: Option<&Value>,
    pointer: &str,
    field: &str,
) {
    if let Some(old) = old
        && old.pointer(pointer) != obj.pointer(pointer)
    {
        causes.push(Cause::new(
            "FieldValueInvalid",
            field,
            "Invalid value: field is immutable",
        ));
    }
}

fn pod_spec_causes(causes: &mut Vec<Cause>, spec: Option<&Value>, prefix: &str) {
    let Some(spec) = spec else {
        causes.push(Cause::new("FieldValueRequired", prefix, "Required value"));
        return;
    };
    let cs = spec.get("containers").and_then(Value::as_array);
    if cs.is_none_or(Vec::is_empty) {
        causes.push(Cause::new(
            "FieldValueRequired",
            &format!("{prefix}.containers"),
            "Required value",
        ));
    }
    let mut names = std::collections::HashSet::new();
    for (key, list) in [
        ("initContainers", spec.get("initContainers")),
        ("containers", spec.get("containers")),
    ] {
        for (i, c) in list
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
            let f = format!("{prefix}.{key}[{i}]");
            if name.is_empty() {
                causes.push(Cause::new(
                    "FieldValueRequired",
                    &format!("{f}.name"),
                    "Required value",
                ));
            } else {
                causes.extend(crate::validation::validate_name(
                    name,
                    crate::validation::NameRule::Label,
                    &format!("{f}.name"),
                ));
                if !names.insert(name.to_string()) {
                    causes.push(Cause::new(
                        "FieldValueDuplicate",
                        &format!("{f}.name"),
                        format!("Duplicate value: \"{name}\""),
                    ));
                }
            }
            if c.get("image")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                causes.push(Cause::new(
                    "FieldValueRequired",
                    &format!("{f}.image"),
                    "Required value",
                ));
            }
        }
    }
}

/// Kind-specific validation; `old` is set on updates.
pub fn validate(group: &str, kind: &str, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut c = Vec::new();
    match (group, kind) {
        ("", "Pod") => {
            pod_spec_causes(&mut c, obj.get("spec"), "spec");
            if old.is_some() {
                // Only image, activeDeadlineSeconds, tolerations (additions) may change on a pod.
                let strip = |v: &Value| {
                    let mut s = v.get("spec").cloned().unwrap_or(Value::Null);
                    if let Some(cs) = s.get_mut("containers").and_then(Value::as_array_mut) {
                        for ctr in cs {
                            if let Some(m) = ctr.as_object_mut() {
                                m.remove("image");
                            }
                        }
                    }
                    if let Some(m) = s.as_object_mut() {
                        m.remove("activeDeadlineSeconds");
                        m.remove("tolerations");
                        m.remove("terminationGracePeriodSeconds");
                        m.remove("schedulingGates");
                    }
                    s
                };
                if let Some(o) = old
                    && strip(o) != strip(obj)
                    && o.pointer("/spec/nodeName") == obj.pointer("/spec/nodeName")
                {
                    c.push(Cause::new("FieldValueForbidden", "spec", "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"));
                }
            }
        }
        ("", "PodTemplate") => {
            pod_spec_causes(&mut c, obj.pointer("/template/spec"), "template.spec")
        }
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet") => {
            required(&mut c, obj, "/spec/selector", "spec.selector");
            pod_spec_causes(
                &mut c,
                obj.pointer("/spec/template/spec"),
                "spec.template.spec",
            );
            if let Some(sel) = obj.pointer("/spec/selector") {
                match crate::selector::LabelSelector::from_json(sel) {
                    Ok(s) if s.is_empty() => c.push(Cause::new(
                        "FieldValueInvalid",
                        "spec.selector",
                        "Invalid value: empty selector is invalid for deployment",
                    )),
                    Ok(s) => {
                        let labels = obj
                            .pointer("/spec/template/metadata/labels")
                            .cloned()
                            .unwrap_or(Value::Null);
                        if !s.matches_object(&json!({"metadata": {"labels": labels}})) {
                            c.push(Cause::new("FieldValueInvalid", "spec.template.metadata.labels", format!("Invalid value: {labels}: `selector` does not match template `labels`")));
                        }
                    }
                    Err(e) => c.push(Cause::new("FieldValueInvalid", "spec.selector", e.message)),
                }
            }
            immutable(&mut c, obj, old, "/spec/selector", "spec.selector");
            if let Some(r) = obj.pointer("/spec/replicas").and_then(Value::as_i64)
                && r < 0
            {
                c.push(Cause::new(
                    "FieldValueInvalid",
                    "spec.replicas",
                    format!("Invalid value: {r}: must be greater than or equal to 0"),
                ));
            }
        }
        ("batch", "Job") => {
            pod_spec_causes(
                &mut c,
                obj.pointer("/spec/template/spec"),
                "spec.template.spec",
            );
            let rp = obj
                .pointer("/spec/template/spec/restartPolicy")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if rp != "Never" && rp != "OnFailure" {
                c.push(Cause::new(
                    "FieldValueNotSupported",
                    "spec.template.spec.restartPolicy",
                    format!(
                        "Unsupported value: \"{rp}\": supported values: \"OnFailure\", \"Never\""
                    ),
                ));
            }
        }
        ("batch", "CronJob") => {
            required(&mut c, obj, "/spec/schedule", "spec.schedule");
            pod_spec_causes(
                &mut c,
                obj.pointer("/spec/jobTemplate/spec/template/spec"),
                "spec.jobTemplate.spec.template.spec",
            );
        }
        ("", "Service") => service::validate(&mut c, obj, old),
        ("", "ConfigMap" | "Secret") => {
            if let Some(o) = old
                && o.get("immutable").and_then(Value::as_bool) == Some(true)
            {
                if o.get("data") != obj.get("data") || o.get("binaryData") != obj.get("binaryData")
                {
                    c.push(Cause::new(
                        "FieldValueForbidden",
                        "data",
                        "Forbidden: field is immutable when `immutable` is set",
                    ));
                }
                if obj.get("immutable").and_then(Value::as_bool) != Some(true) {
                    c.push(Cause::new(
                        "FieldValueForbidden",
                        "immutable",
                        "Forbidden: field is immutable when `immutable` is set",
                    ));
                }
            }
            if kind == "Secret" {
                immutable(&mut c, obj, old, "/type", "type");
            }
        }
        ("", "PersistentVolumeClaim") => {
            required(&mut c, obj, "/spec/accessModes", "spec.accessModes");
            required(
                &mut c,
                obj,
                "/spec/resources/requests/storage",
                "spec.resources[storage]",
            );
            if let Some(o) = old {
                let strip = |v: &Value| {
                    let mut s = v.get("spec").cloned().unwrap_or(Value::Null);
                    if let Some(m) = s.as_object_mut() {
                        m.remove("resources");
                        m.remove("volumeName");
                        m.remove("volumeAttributesClassName");
                    }
                    s
                };
                if strip(o) != strip(obj) {
                    c.push(Cause::new("FieldValueForbidden", "spec", "Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims"));
                }
            }
        }
        ("storage.k8s.io", "StorageClass") => {
            required(&mut c, obj, "/provisioner", "provisioner");
            immutable(&mut c, obj, old, "/provisioner", "provisioner");
            immutable(&mut c, obj, old, "/parameters", "parameters");
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            required(&mut c, obj, "/spec/group", "spec.group");
            required(&mut c, obj, "/spec/names/plural", "spec.names.plural");
            required(&mut c, obj, "/spec/names/kind", "spec.names.kind");
            required(&mut c, obj, "/spec/versions", "spec.versions");
            required(&mut c, obj, "/spec/scope", "spec.scope");
            let expected = format!(
                "{}.{}",
                obj.pointer("/spec/names/plural")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
                obj.pointer("/spec/group")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            );
            let name = crate::meta::name(obj);
            if !name.is_empty() && name != expected {
                c.push(Cause::new(
                    "FieldValueInvalid",
                    "metadata.name",
                    format!(
                        "Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"
                    ),
                ));
            }
        }
        _ => {}
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_defaults() {
        let mut p = json!({"spec": {"containers": [{"name": "a", "image": "nginx", "ports": [{"containerPort": 80}]}]}});
        apply("", "Pod", &mut p);
        assert_eq!(p["spec"]["restartPolicy"], "Always");
        assert_eq!(p["spec"]["enableServiceLinks"], true);
        assert_eq!(p["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(p["spec"]["containers"][0]["ports"][0]["protocol"], "TCP");
        assert_eq!(p["status"]["phase"], "Pending");
        assert_eq!(p["status"]["qosClass"], "BestEffort");
        assert!(!image_is_latest("nginx:1.25"));
        assert!(image_is_latest("registry:5000/nginx"));
        let mut p = json!({"spec": {"containers": [{"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m"}}}]}});
        apply("", "Pod", &mut p);
        assert_eq!(
            p["spec"]["containers"][0]["resources"]["requests"],
            json!({"cpu": "500m", "memory": "1Gi"})
        );
        assert_eq!(p["status"]["qosClass"], "Burstable");
    }

    #[test]
    fn deployment_defaults_and_validation() {
        let mut d = json!({"spec": {"selector": {"matchLabels": {"app": "a"}}, "template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "a", "image": "x:1"}]}}}});
        apply("apps", "Deployment", &mut d);
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert!(validate("apps", "Deployment", &d, None).is_empty());
        let mut bad = d.clone();
        bad["spec"]["template"]["metadata"]["labels"]["app"] = json!("b");
        assert_eq!(
            validate("apps", "Deployment", &bad, None)[0].field,
            "spec.template.metadata.labels"
        );
        assert_eq!(
            validate("apps", "Deployment", &bad, Some(&d))[0].field,
            "spec.template.metadata.labels"
        );
    }

    #[test]
    fn service_defaults() {
        let mut s = json!({"spec": {"ports": [{"port": 80}]}});
        apply("", "Service", &mut s);
        assert_eq!(s["status"], json!({"loadBalancer": {}}));
        assert_eq!(s["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(s["spec"]["type"], "ClusterIP");
        assert!(validate("", "Service", &s, None).is_empty());
    }

    #[test]
    fn immutable_configmap() {
        let old = json!({"immutable": true, "data": {"a": "1"}});
        let new = json!({"immutable": true, "data": {"a": "2"}});
        assert_eq!(validate("", "ConfigMap", &new, Some(&old)).len(), 1);
    }
}

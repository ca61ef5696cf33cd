//! The downward API: pod fields and container resources as text, formatted like the kubelet
//! (maps as sorted `key="value"` lines with Go's quoting). The agent can use the same functions
//! for environment variables (`fieldRef`, `resourceFieldRef`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, ResourceFieldSelector};
use k8slite_api::quantity::Quantity;

use crate::VolumeError;

/// Go's `strconv.Quote`: double quotes, `\"` and `\\`, the usual C escapes, `\xNN` for other
/// ASCII control characters, `\uNNNN`/`\UNNNNNNNN` for non-printable others.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if c == ' ' || !(c.is_control() || c.is_whitespace()) => out.push(c),
            c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// The kubelet's `FormatMap`: `key="value"` lines sorted by key, without a final newline.
pub fn format_map(m: &BTreeMap<String, String>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `metadata.labels['key']` → `("labels", "key")`.
fn subscript(path: &str) -> Option<(&str, &str)> {
    let (head, rest) = path.split_once("['")?;
    let key = rest.strip_suffix("']")?;
    Some((head, key))
}

/// The value of a `fieldRef.fieldPath` for `pod`.
pub fn field_value(pod: &Pod, field_path: &str) -> Result<String, VolumeError> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let empty = BTreeMap::new();
    if let Some((head, key)) = subscript(field_path) {
        let map = match head {
            "metadata.labels" => meta.labels.as_ref(),
            "metadata.annotations" => meta.annotations.as_ref(),
            _ => return Err(VolumeError::FieldPath(field_path.to_string())),
        };
        return Ok(map.and_then(|m| m.get(key)).cloned().unwrap_or_default());
    }
    let ips = |list: Option<Vec<String>>| list.unwrap_or_default().join(",");
    Ok(match field_path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(meta.labels.as_ref().unwrap_or(&empty)),
        "metadata.annotations" => format_map(meta.annotations.as_ref().unwrap_or(&empty)),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" => status.and_then(|s| s.host_ip.clone()).unwrap_or_default(),
        "status.hostIPs" => ips(status.and_then(|s| {
            s.host_ips
                .as_ref()
                .map(|v| v.iter().map(|i| i.ip.clone()).collect())
        })),
        "status.podIP" => status.and_then(|s| s.pod_ip.clone()).unwrap_or_default(),
        "status.podIPs" => ips(status.and_then(|s| {
            s.pod_ips
                .as_ref()
                .map(|v| v.iter().map(|i| i.ip.clone()).collect())
        })),
        _ => return Err(VolumeError::FieldPath(field_path.to_string())),
    })
}

fn quantity(
    q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity,
) -> Result<Quantity, VolumeError> {
    Quantity::from_k8s(q).ok_or_else(|| VolumeError::Quantity(q.0.clone()))
}

/// The value of a `resourceFieldRef` (`limits.cpu`, `requests.memory`, `limits.ephemeral-storage`,
/// `limits.hugepages-2Mi`, …) of `container`, divided by the divisor (default 1) and rounded up
/// like the kubelet. An unset limit is the node's allocatable amount (`allocatable`; 0 when the
/// node's value is not known either).
pub fn container_resource_value(
    container: &Container,
    field: &ResourceFieldSelector,
    allocatable: &BTreeMap<String, Quantity>,
) -> Result<String, VolumeError> {
    let bad = || {
        VolumeError::ResourceField(format!(
            "unsupported container resource {:?}",
            field.resource
        ))
    };
    let (kind, name) = field.resource.split_once('.').ok_or_else(bad)?;
    let res = container.resources.as_ref();
    let list = match kind {
        "limits" => res.and_then(|r| r.limits.as_ref()),
        "requests" => res.and_then(|r| r.requests.as_ref()),
        _ => return Err(bad()),
    };
    if !matches!(name, "cpu" | "memory" | "ephemeral-storage") && !name.starts_with("hugepages-") {
        return Err(bad());
    }
    let value = match list.and_then(|l| l.get(name)) {
        Some(q) => quantity(q)?,
        None if kind == "limits" => allocatable.get(name).copied().unwrap_or_default(),
        // an unset cpu request reads as the limit when one is set (the API server's defaulting)
        None => match res
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get(name))
        {
            Some(q) => quantity(q)?,
            None => Quantity::default(),
        },
    };
    let divisor = match &field.divisor {
        Some(d) => quantity(d)?,
        None => Quantity::from_units(1),
    };
    if divisor.is_zero() {
        return Err(VolumeError::ResourceField(
            "divisor must be greater than zero".into(),
        ));
    }
    let out = if name == "cpu" {
        div_ceil(value.milli(), divisor.milli())
    } else {
        div_ceil(i128::from(value.value()), i128::from(divisor.value()))
    };
    Ok(out.to_string())
}

fn div_ceil(a: i128, b: i128) -> i128 {
    if b == 0 {
        return 0;
    }
    let q = a / b;
    if a % b != 0 && (a > 0) == (b > 0) {
        q + 1
    } else {
        q
    }
}

/// [`container_resource_value`] for the container `field.containerName` of `pod`.
pub fn resource_value(
    pod: &Pod,
    field: &ResourceFieldSelector,
    allocatable: &BTreeMap<String, Quantity>,
) -> Result<String, VolumeError> {
    let name = field.container_name.as_deref().unwrap_or_default();
    let spec = pod.spec.as_ref();
    let container = spec
        .into_iter()
        .flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        })
        .find(|c| c.name == name)
        .ok_or_else(|| {
            VolumeError::ResourceField(format!("container {name:?} not found in the pod"))
        })?;
    container_resource_value(container, field, allocatable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity as Q;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("ns".into()),
                uid: Some("u-1".into()),
                labels: Some(BTreeMap::from([
                    ("b".into(), "two".into()),
                    ("a".into(), "say \"hi\"\n".into()),
                ])),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    resources: Some(ResourceRequirements {
                        limits: Some(BTreeMap::from([
                            ("cpu".into(), Q("500m".into())),
                            ("memory".into(), Q("64Mi".into())),
                        ])),
                        requests: Some(BTreeMap::from([("memory".into(), Q("1Mi".into()))])),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn fields_format_like_the_kubelet() {
        let p = pod();
        assert_eq!(field_value(&p, "metadata.name").unwrap(), "web");
        assert_eq!(field_value(&p, "metadata.namespace").unwrap(), "ns");
        assert_eq!(field_value(&p, "metadata.uid").unwrap(), "u-1");
        assert_eq!(
            field_value(&p, "metadata.labels").unwrap(),
            "a=\"say \\\"hi\\\"\\n\"\nb=\"two\""
        );
        assert_eq!(field_value(&p, "metadata.labels['b']").unwrap(), "two");
        assert_eq!(field_value(&p, "metadata.annotations").unwrap(), "");
        assert!(field_value(&p, "spec.bogus").is_err());
    }

    #[test]
    fn go_quoting() {
        assert_eq!(go_quote("plain"), "\"plain\"");
        assert_eq!(go_quote("tab\there"), "\"tab\\there\"");
        assert_eq!(go_quote("\u{1}"), "\"\\x01\"");
        assert_eq!(go_quote("héllo ✓"), "\"héllo ✓\"");
        assert_eq!(go_quote("back\\slash"), "\"back\\\\slash\"");
    }

    #[test]
    fn resources_with_divisors() {
        let p = pod();
        let alloc = BTreeMap::from([("cpu".to_string(), Quantity::from_units(2))]);
        let f = |r: &str, d: Option<&str>| ResourceFieldSelector {
            container_name: Some("c".into()),
            resource: r.into(),
            divisor: d.map(|d| Q(d.into())),
        };
        let v = |r, d| resource_value(&p, &f(r, d), &alloc).unwrap();
        assert_eq!(v("limits.cpu", None), "1"); // 0.5 rounds up
        assert_eq!(v("limits.cpu", Some("1m")), "500");
        assert_eq!(v("limits.memory", None), "67108864");
        assert_eq!(v("limits.memory", Some("1Mi")), "64");
        assert_eq!(v("requests.memory", Some("1Ki")), "1024");
        assert_eq!(v("requests.cpu", Some("1m")), "500"); // defaults to the limit
        assert_eq!(v("limits.ephemeral-storage", None), "0");
        let mut no_limit = p.clone();
        no_limit.spec.as_mut().unwrap().containers[0].resources = None;
        assert_eq!(
            resource_value(&no_limit, &f("limits.cpu", Some("1m")), &alloc).unwrap(),
            "2000"
        );
        assert!(resource_value(&p, &f("limits.gpu", None), &alloc).is_err());
        let mut other = f("limits.cpu", None);
        other.container_name = Some("nope".into());
        assert!(resource_value(&p, &other, &alloc).is_err());
    }
}

//! Validation of Services, with upstream's field paths and messages (`ValidateService`): the
//! checks a client hits with `kubectl create`/`apply`, so bad input is refused with 422 before
//! the node agents' service proxy ever sees it.

use std::collections::HashSet;
use std::net::IpAddr;

use serde_json::Value;

use crate::status::Cause;
use crate::validation::validate_name;

const IP_MSG: &str = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)";

/// The causes for an invalid Service (`old` on update).
pub(super) fn validate(c: &mut Vec<Cause>, obj: &Value, old: Option<&Value>) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let ty = str_at(spec, "type").unwrap_or("ClusterIP");
    let headless = str_at(spec, "clusterIP") == Some("None");
    if ty != "ExternalName" && !headless {
        super::required(c, obj, "/spec/ports", "spec.ports");
    }
    if !matches!(
        ty,
        "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName"
    ) {
        c.push(unsupported(
            "spec.type",
            ty,
            &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        ));
    }
    ports(c, spec);
    if let Some(v) = str_at(spec, "sessionAffinity")
        && !matches!(v, "None" | "ClientIP")
    {
        c.push(unsupported(
            "spec.sessionAffinity",
            v,
            &["ClientIP", "None"],
        ));
    }
    for field in ["externalTrafficPolicy", "internalTrafficPolicy"] {
        if let Some(v) = str_at(spec, field)
            && !matches!(v, "Cluster" | "Local")
        {
            c.push(unsupported(
                &format!("spec.{field}"),
                v,
                &["Cluster", "Local"],
            ));
        }
    }
    external_ips(c, spec);
    source_ranges(c, spec, ty);
    if let Some(o) = old
        && o.pointer("/spec/clusterIP").is_some()
        && o.pointer("/spec/clusterIP") != obj.pointer("/spec/clusterIP")
        && ty != "ExternalName"
    {
        c.push(Cause::new(
            "FieldValueInvalid",
            "spec.clusterIPs[0]",
            "Invalid value: field is immutable",
        ));
    }
}

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn unsupported(field: &str, value: &str, supported: &[&str]) -> Cause {
    let list = supported
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ");
    Cause::new(
        "FieldValueNotSupported",
        field,
        format!("Unsupported value: \"{value}\": supported values: {list}"),
    )
}

fn invalid(field: &str, shown: &str, msg: &str) -> Cause {
    Cause::new(
        "FieldValueInvalid",
        field,
        format!("Invalid value: {shown}: {msg}"),
    )
}

/// Names (required and unique when there are several), port and target port ranges, protocols,
/// and unique port/protocol pairs.
fn ports(c: &mut Vec<Cause>, spec: &Value) {
    let list = spec
        .get("ports")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut names = HashSet::new();
    let mut pairs = HashSet::new();
    for (i, p) in list.iter().enumerate() {
        let at = format!("spec.ports[{i}]");
        let name = str_at(p, "name").unwrap_or_default();
        if name.is_empty() {
            if list.len() > 1 {
                c.push(Cause::new(
                    "FieldValueRequired",
                    &format!("{at}.name"),
                    "Required value",
                ));
            }
        } else {
            c.extend(validate_name(
                name,
                crate::validation::NameRule::Label,
                &format!("{at}.name"),
            ));
            if !names.insert(name) {
                c.push(Cause::new(
                    "FieldValueDuplicate",
                    &format!("{at}.name"),
                    format!("Duplicate value: \"{name}\""),
                ));
            }
        }
        let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
        if !(1..=65535).contains(&port) {
            c.push(invalid(
                &format!("{at}.port"),
                &port.to_string(),
                "must be between 1 and 65535, inclusive",
            ));
        }
        let protocol = str_at(p, "protocol").unwrap_or("TCP");
        if !matches!(protocol, "TCP" | "UDP" | "SCTP") {
            c.push(unsupported(
                &format!("{at}.protocol"),
                protocol,
                &["SCTP", "TCP", "UDP"],
            ));
        } else if !pairs.insert((port, protocol)) {
            c.push(Cause::new(
                "FieldValueDuplicate",
                &at,
                format!("Duplicate value: \"{port}/{protocol}\""),
            ));
        }
        match p.get("targetPort") {
            Some(Value::Number(n)) => {
                let t = n.as_i64().unwrap_or(0);
                if !(1..=65535).contains(&t) {
                    c.push(invalid(
                        &format!("{at}.targetPort"),
                        &t.to_string(),
                        "must be between 1 and 65535, inclusive",
                    ));
                }
            }
            Some(Value::String(s)) => {
                for msg in port_name_problems(s) {
                    c.push(invalid(
                        &format!("{at}.targetPort"),
                        &format!("\"{s}\""),
                        msg,
                    ));
                }
            }
            _ => {}
        }
    }
}

/// Upstream's IANA_SVC_NAME rules for a named target port.
fn port_name_problems(s: &str) -> Vec<&'static str> {
    let mut out = Vec::new();
    if s.len() > 15 {
        out.push("must be no more than 15 characters");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        out.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)");
    }
    if s.contains("--") {
        out.push("must not contain consecutive hyphens");
    }
    if !s.bytes().any(|b| b.is_ascii_lowercase()) {
        out.push("must contain at least one letter (a-z)");
    }
    if s.starts_with('-') || s.ends_with('-') {
        out.push("must not begin or end with a hyphen");
    }
    out
}

/// Each external IP is an address a node may answer for (not unspecified, loopback,
/// link-local or link-local multicast).
fn external_ips(c: &mut Vec<Cause>, spec: &Value) {
    let list = spec
        .get("externalIPs")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for (i, v) in list.iter().enumerate() {
        let field = format!("spec.externalIPs[{i}]");
        let text = v.as_str().unwrap_or_default();
        let shown = format!("\"{text}\"");
        let Ok(ip) = text.parse::<IpAddr>() else {
            c.push(invalid(&field, &shown, IP_MSG));
            continue;
        };
        let special = match ip {
            IpAddr::V4(a) if a.is_unspecified() => Some("may not be unspecified (0.0.0.0)"),
            IpAddr::V6(a) if a.is_unspecified() => Some("may not be unspecified (::)"),
            IpAddr::V4(a) if a.is_loopback() => {
                Some("may not be in the loopback range (127.0.0.0/8, ::1/128)")
            }
            IpAddr::V6(a) if a.is_loopback() => {
                Some("may not be in the loopback range (127.0.0.0/8, ::1/128)")
            }
            IpAddr::V4(a) if a.is_link_local() => {
                Some("may not be in the link-local range (169.254.0.0/16, fe80::/10)")
            }
            IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80 => {
                Some("may not be in the link-local range (169.254.0.0/16, fe80::/10)")
            }
            IpAddr::V4(a) if a.octets()[..3] == [224, 0, 0] => {
                Some("may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)")
            }
            IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xff00 && a.segments()[0] & 0xf == 2 => {
                Some("may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)")
            }
            _ => None,
        };
        if let Some(msg) = special {
            c.push(invalid(&field, &shown, msg));
        }
    }
}

/// `loadBalancerSourceRanges`: CIDRs, and only on LoadBalancer Services.
fn source_ranges(c: &mut Vec<Cause>, spec: &Value, ty: &str) {
    let list = spec
        .get("loadBalancerSourceRanges")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if list.is_empty() {
        return;
    }
    if ty != "LoadBalancer" {
        c.push(Cause::new(
            "FieldValueForbidden",
            "spec.loadBalancerSourceRanges",
            "Forbidden: may only be used when `type` is 'LoadBalancer'",
        ));
        return;
    }
    for (i, v) in list.iter().enumerate() {
        let text = v.as_str().unwrap_or_default();
        if !is_cidr(text.trim()) {
            c.push(invalid(
                &format!("spec.loadBalancerSourceRanges[{i}]"),
                &format!("\"{text}\""),
                "must be a CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            ));
        }
    }
}

fn is_cidr(s: &str) -> bool {
    let Some((ip, len)) = s.split_once('/') else {
        return false;
    };
    let Ok(len) = len.parse::<u8>() else {
        return false;
    };
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => len <= 32,
        Ok(IpAddr::V6(_)) => len <= 128,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn causes(spec: Value) -> Vec<(String, String)> {
        let mut c = Vec::new();
        validate(&mut c, &json!({ "spec": spec }), None);
        c.into_iter().map(|c| (c.field, c.message)).collect()
    }

    #[test]
    fn a_plain_service_is_valid() {
        let ok = causes(
            json!({"ports": [{"name": "http", "port": 80, "targetPort": "web", "protocol": "TCP"},
            {"name": "dns", "port": 53, "targetPort": 53, "protocol": "UDP"}],
            "externalIPs": ["192.0.2.7", "2001:db8::1"], "sessionAffinity": "ClientIP"}),
        );
        assert!(ok.is_empty(), "{ok:?}");
        let lb = causes(json!({"type": "LoadBalancer", "ports": [{"port": 80}],
            "loadBalancerSourceRanges": ["10.0.0.0/8", " 2001:db8::/64"], "externalTrafficPolicy": "Local"}));
        assert!(lb.is_empty(), "{lb:?}");
    }

    #[test]
    fn ports_are_checked_as_upstream_does() {
        let c = causes(
            json!({"ports": [{"port": 80}, {"name": "Bad_", "port": 80, "protocol": "ICMP"},
            {"name": "b", "port": 0, "targetPort": 70000}, {"name": "b", "port": 81, "targetPort": "1-"}]}),
        );
        let fields: Vec<&str> = c.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.ports[0].name",
                "spec.ports[1].name",
                "spec.ports[1].protocol",
                "spec.ports[2].port",
                "spec.ports[2].targetPort",
                "spec.ports[3].name",
                "spec.ports[3].targetPort",
                "spec.ports[3].targetPort",
            ],
            "{c:?}"
        );
        assert_eq!(c[0].1, "Required value");
        assert_eq!(
            c[2].1,
            "Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\""
        );
        assert_eq!(c[5].1, "Duplicate value: \"b\"");
        let dup = causes(
            json!({"ports": [{"name": "a", "port": 80}, {"name": "b", "port": 80, "protocol": "TCP"}]}),
        );
        assert_eq!(dup.len(), 1, "{dup:?}");
        assert_eq!(dup[0].0, "spec.ports[1]");
    }

    #[test]
    fn external_ips_must_be_usable_addresses() {
        let c = causes(json!({"ports": [{"port": 80}],
            "externalIPs": ["foo", "0.0.0.0", "127.0.0.2", "169.254.1.1", "224.0.0.5", "fe80::1", "ff02::1", "10.0.0.1"]}));
        let msgs: Vec<&str> = c.iter().map(|(_, m)| m.as_str()).collect();
        assert_eq!(msgs.len(), 7, "{c:?}");
        assert_eq!(
            msgs[0],
            "Invalid value: \"foo\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
        );
        assert!(msgs[2].contains("loopback"));
        assert!(msgs[4].contains("link-local multicast"));
        assert_eq!(c[6].0, "spec.externalIPs[6]");
    }

    #[test]
    fn policies_affinity_and_source_ranges() {
        let c = causes(json!({"ports": [{"port": 80}], "sessionAffinity": "Sticky",
            "externalTrafficPolicy": "Global", "internalTrafficPolicy": "Node",
            "loadBalancerSourceRanges": ["10.0.0.0/8"]}));
        let fields: Vec<&str> = c.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.sessionAffinity",
                "spec.externalTrafficPolicy",
                "spec.internalTrafficPolicy",
                "spec.loadBalancerSourceRanges"
            ]
        );
        let bad = causes(json!({"type": "LoadBalancer", "ports": [{"port": 80}],
            "loadBalancerSourceRanges": ["10.0.0.0", "10.0.0.0/33"]}));
        assert_eq!(bad.len(), 2, "{bad:?}");
    }
}

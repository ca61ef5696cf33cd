//! Image reference normalisation as docker, ctr and CRI do it:
//! `busybox` → `docker.io/library/busybox:latest`, `me/app:1` → `docker.io/me/app:1`,
//! `registry.local:5000/app` → `registry.local:5000/app:latest`.

use super::{ImageError, Result};

const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DOMAIN: &str = "index.docker.io";

/// The fully qualified form of an image reference (domain, path, tag or digest).
pub fn normalize_reference(reference: &str) -> Result<String> {
    let invalid = |reason: &str| ImageError::InvalidReference {
        reference: reference.to_string(),
        reason: reason.to_string(),
    };
    let r = reference.trim();
    if r.is_empty() {
        return Err(invalid("empty"));
    }
    let (rest, digest) = match r.split_once('@') {
        Some((n, d)) => {
            let (alg, hex) = d
                .split_once(':')
                .ok_or_else(|| invalid("digest without algorithm"))?;
            if alg.is_empty() || hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(invalid("malformed digest"));
            }
            (n, Some(d))
        }
        None => (r, None),
    };
    // A tag is the part after the last ':' that has no '/' after it (else it is a port).
    let (name, tag) = match rest.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, Some(t)),
        _ => (rest, None),
    };
    if let Some(t) = tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && !t.starts_with(['.', '-'])
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !ok {
            return Err(invalid("malformed tag"));
        }
    }
    let (domain, path) = match name.split_once('/') {
        Some((first, remainder))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first, remainder.to_string())
        }
        _ => (DEFAULT_DOMAIN, name.to_string()),
    };
    let domain = if domain == LEGACY_DOMAIN {
        DEFAULT_DOMAIN
    } else {
        domain
    };
    let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    let path_ok = path.split('/').all(|c| {
        !c.is_empty()
            && c.starts_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
            && c.chars().all(|ch| {
                ch.is_ascii_lowercase() || ch.is_ascii_digit() || matches!(ch, '.' | '_' | '-')
            })
    });
    if !path_ok {
        return Err(invalid(
            "repository path must be lowercase letters, digits and . _ -",
        ));
    }
    if domain.is_empty() {
        return Err(invalid("empty domain"));
    }
    let mut out = format!("{domain}/{path}");
    match (tag, digest) {
        (Some(t), _) => {
            out.push(':');
            out.push_str(t);
        }
        (None, None) => out.push_str(":latest"),
        (None, Some(_)) => {}
    }
    if let Some(d) = digest {
        out.push('@');
        out.push_str(d);
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_docker() {
        let cases = [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:latest", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("library/busybox", "docker.io/library/busybox:latest"),
            ("docker.io/busybox", "docker.io/library/busybox:latest"),
            ("index.docker.io/busybox:1", "docker.io/library/busybox:1"),
            ("me/app:v1", "docker.io/me/app:v1"),
            ("registry.local:5000/app", "registry.local:5000/app:latest"),
            ("localhost/app:dev", "localhost/app:dev"),
            ("k8slite.local/pause:3.9", "k8slite.local/pause:3.9"),
            ("ghcr.io/a/b/c:1.0", "ghcr.io/a/b/c:1.0"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_reference(input).unwrap(), want, "{input}");
        }
        let d = "sha256:".to_string() + &"ab".repeat(32);
        assert_eq!(
            normalize_reference(&format!("busybox@{d}")).unwrap(),
            format!("docker.io/library/busybox@{d}")
        );
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "a//b",
            "busybox@sha256:xyz",
            "x:-tag",
            "busybox@nope",
        ] {
            assert!(normalize_reference(bad).is_err(), "{bad:?}");
        }
    }
}

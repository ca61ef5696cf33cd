//! Kubeconfig files for the admin (and later components).

use std::path::Path;

use base64::Engine;
use serde_json::json;

use crate::files::write_atomic;
use crate::{PkiError, Result};

/// Write a kubeconfig with one cluster/user/context named `default`, atomically, with `mode`
/// (applied even when the file existed).
pub fn write_kubeconfig(
    path: &Path,
    mode: u32,
    server_url: &str,
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<()> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "default", "cluster": {"server": server_url, "certificate-authority-data": b64(ca_pem)}}],
        "users": [{"name": "default", "user": {"client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem)}}],
        "contexts": [{"name": "default", "context": {"cluster": "default", "user": "default"}}],
        "current-context": "default",
        "preferences": {},
    });
    let yaml = serde_saphyr::to_string(&doc).map_err(|e| PkiError::Parse {
        what: "kubeconfig".into(),
        message: e.to_string(),
    })?;
    write_atomic(path, yaml.as_bytes(), mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_reads_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("sub/kubeconfig.yaml");
        write_kubeconfig(&p, 0o640, "https://127.0.0.1:6443", "CA", "CERT", "KEY").expect("write");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777,
            0o640
        );
        let out = std::process::Command::new("kubectl")
            .args([
                "config",
                "view",
                "--raw",
                "-o",
                "jsonpath={.clusters[0].cluster.server}",
                "--kubeconfig",
            ])
            .arg(&p)
            .output()
            .unwrap_or_else(|e| panic!("prerequisite missing: kubectl ({e})"));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "https://127.0.0.1:6443"
        );
    }
}

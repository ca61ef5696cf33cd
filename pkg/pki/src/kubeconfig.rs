//! Kubeconfig files (the admin's, later the agents').

use std::path::Path;

use base64::Engine;
use serde_json::json;

use crate::files::write_atomic;
use crate::{PkiError, Result};

/// Write a kubeconfig with one cluster, user and context, all named `default`
/// (`current-context: default`), certificates and key embedded base64
/// (`certificate-authority-data`, `client-certificate-data`, `client-key-data`).
///
/// The file is replaced atomically (temp file + rename), parent directories are created, and
/// it gets permission bits `mode` even when it existed with others.
pub fn write_kubeconfig(
    path: &Path,
    mode: u32,
    server_url: &str,
    ca_pem: &str,
    client_cert_pem: &str,
    client_key_pem: &str,
) -> Result<()> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": "default",
            "cluster": {"server": server_url, "certificate-authority-data": b64(ca_pem)},
        }],
        "users": [{
            "name": "default",
            "user": {
                "client-certificate-data": b64(client_cert_pem),
                "client-key-data": b64(client_key_pem),
            },
        }],
        "contexts": [{
            "name": "default",
            "context": {"cluster": "default", "user": "default"},
        }],
        "current-context": "default",
        "preferences": {},
    });
    let yaml = serde_saphyr::to_string(&doc).map_err(|e| PkiError::parse("kubeconfig", e))?;
    write_atomic(path, yaml.as_bytes(), mode)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    use super::*;

    const KUBECTL: &str = "/usr/bin/kubectl";

    fn kubectl(kubeconfig: &Path, jsonpath: &str) -> String {
        let kubectl = if Path::new(KUBECTL).exists() {
            KUBECTL
        } else {
            "kubectl"
        };
        let out = Command::new(kubectl)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["config", "view", "--raw", "--minify", "-o"])
            .arg(format!("jsonpath={jsonpath}"))
            .output()
            .unwrap_or_else(|e| {
                panic!("prerequisite missing: kubectl (not at {KUBECTL} nor on PATH: {e})")
            });
        assert!(
            out.status.success(),
            "kubectl rejected the kubeconfig: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn kubectl_reads_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let pki = crate::ClusterPki::load_or_create(
            &dir.path().join("tls"),
            &crate::PkiOptions {
                cluster_domain: "cluster.local".into(),
                service_ip: "10.43.0.1".parse().expect("ip"),
                sans: vec![],
                hostname: "edge-1".into(),
            },
        )
        .expect("pki");
        let p = dir.path().join("etc/k8slite/k8slite.yaml");
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, "old").expect("old file");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let admin = pki.admin();
        write_kubeconfig(
            &p,
            0o600,
            "https://127.0.0.1:6443",
            pki.server_ca_pem(),
            &admin.cert_pem,
            &admin.key_pem,
        )
        .expect("write");
        assert_eq!(
            std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777,
            0o600,
            "mode applied to an existing file"
        );

        assert_eq!(kubectl(&p, "{.current-context}"), "default");
        assert_eq!(
            kubectl(
                &p,
                "{.clusters[0].name}/{.users[0].name}/{.contexts[0].name}"
            ),
            "default/default/default"
        );
        assert_eq!(
            kubectl(&p, "{.clusters[0].cluster.server}"),
            "https://127.0.0.1:6443"
        );
        let decode = |b64: String| {
            String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .expect("base64"),
            )
            .expect("utf8")
        };
        assert_eq!(
            decode(kubectl(
                &p,
                "{.clusters[0].cluster.certificate-authority-data}"
            )),
            pki.server_ca_pem()
        );
        assert_eq!(
            decode(kubectl(&p, "{.users[0].user.client-certificate-data}")),
            admin.cert_pem
        );
        assert_eq!(
            decode(kubectl(&p, "{.users[0].user.client-key-data}")),
            admin.key_pem
        );

        // Rewritten in place with another mode.
        write_kubeconfig(&p, 0o640, "https://10.0.0.1:6443", "CA", "CERT", "KEY").expect("again");
        assert_eq!(
            std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777,
            0o640
        );
        assert_eq!(
            kubectl(&p, "{.clusters[0].cluster.server}"),
            "https://10.0.0.1:6443"
        );
    }
}

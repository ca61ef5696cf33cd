//! The cluster PKI under `<data-dir>/server/tls`: three CAs, the API server's serving
//! certificate and the admin client certificate, with k3s' file names.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::ca::{Ca, CertAndKey, LeafInfo, San, Usage, now};
use crate::files::{ensure_mode, read_optional, write_atomic};
use crate::{PkiError, Result};

/// Leaf certificates this close to expiry are re-issued at load (k3s does the same).
const RENEW_AT_LOAD_WITHIN: Duration = Duration::from_secs(90 * 86_400);

const SERVING: &str = "serving-kube-apiserver";
const ADMIN: &str = "client-admin";
const ADMIN_USER: &str = "system:admin";
const ADMIN_GROUP: &str = "system:masters";

/// What the serving certificate must cover.
#[derive(Clone, Debug)]
pub struct PkiOptions {
    /// Cluster domain (`cluster.local`): adds `kubernetes.default.svc.<domain>`.
    pub cluster_domain: String,
    /// First address of the service CIDR (the `kubernetes` Service, e.g. 10.43.0.1).
    pub service_ip: IpAddr,
    /// Node/advertise IPs and `--tls-san` values (IP addresses or DNS names).
    pub sans: Vec<String>,
    /// This machine's hostname (skipped when empty).
    pub hostname: String,
}

impl PkiOptions {
    /// The full SAN set of the API server's serving certificate: the in-cluster names,
    /// `localhost`, 127.0.0.1, ::1, the service IP, the hostname and [`Self::sans`].
    fn serving_sans(&self) -> Result<BTreeSet<San>> {
        let domain = self.cluster_domain.trim_matches('.');
        let fixed = [
            "kubernetes".to_string(),
            "kubernetes.default".into(),
            "kubernetes.default.svc".into(),
            format!("kubernetes.default.svc.{domain}"),
            "localhost".into(),
            "127.0.0.1".into(),
            "::1".into(),
        ];
        let mut out = BTreeSet::new();
        out.insert(San::Ip(self.service_ip));
        for s in fixed
            .iter()
            .chain(std::iter::once(&self.hostname))
            .chain(&self.sans)
        {
            if !s.trim().is_empty() {
                out.insert(San::parse(s)?);
            }
        }
        Ok(out)
    }
}

/// The cluster's CAs and the API server's own certificates.
pub struct ClusterPki {
    dir: PathBuf,
    pub(crate) server_ca: Ca,
    pub(crate) client_ca: Ca,
    request_header_ca: Ca,
    serving: CertAndKey,
    serving_not_after: i64,
    admin: CertAndKey,
    admin_not_after: i64,
}

impl fmt::Debug for ClusterPki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterPki")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn load_pair(dir: &Path, file: &str) -> Result<Option<CertAndKey>> {
    let crt = read_optional(&dir.join(format!("{file}.crt")))?;
    let key_path = dir.join(format!("{file}.key"));
    let key = read_optional(&key_path)?;
    match (crt, key) {
        (Some(cert_pem), Some(key_pem)) => {
            ensure_mode(&key_path, 0o600)?;
            Ok(Some(CertAndKey { cert_pem, key_pem }))
        }
        _ => Ok(None),
    }
}

fn store_pair(dir: &Path, file: &str, pair: &CertAndKey) -> Result<()> {
    write_atomic(
        &dir.join(format!("{file}.key")),
        pair.key_pem.as_bytes(),
        0o600,
    )?;
    write_atomic(
        &dir.join(format!("{file}.crt")),
        pair.cert_pem.as_bytes(),
        0o644,
    )
}

fn expires_within(not_after: i64, within: Duration) -> bool {
    let within = i64::try_from(within.as_secs()).unwrap_or(i64::MAX);
    not_after <= now().saturating_add(within)
}

/// Reuse the stored leaf `file` if `accept` finds nothing wrong with it, otherwise issue a new
/// one with `issue` and store it. Returns the pair and its expiry.
fn reuse_or_issue(
    dir: &Path,
    file: &str,
    ca: &Ca,
    accept: impl Fn(&LeafInfo) -> std::result::Result<(), String>,
    issue: impl Fn() -> Result<CertAndKey>,
) -> Result<(CertAndKey, i64)> {
    if let Some(pair) = load_pair(dir, file)? {
        let verdict = ca.check_leaf(&pair).and_then(|info| {
            accept(&info)?;
            if expires_within(info.not_after, RENEW_AT_LOAD_WITHIN) {
                return Err("it expires within 90 days".into());
            }
            Ok(info.not_after)
        });
        match verdict {
            Ok(not_after) => return Ok((pair, not_after)),
            Err(reason) => tracing::info!(cert = file, %reason, "re-issuing certificate"),
        }
    }
    let pair = issue()?;
    let not_after = ca
        .check_leaf(&pair)
        .map_err(|reason| PkiError::invalid(format!("new {file} certificate"), reason))?
        .not_after;
    store_pair(dir, file, &pair)?;
    Ok((pair, not_after))
}

impl ClusterPki {
    /// Load the PKI from `dir` (`<data-dir>/server/tls`), creating what is missing.
    ///
    /// First start: server CA (`k8slite-server-ca@<unix time>`), client CA, request-header
    /// CA (10 years), the serving certificate `serving-kube-apiserver` from the server CA and
    /// the admin certificate `client-admin` (`system:admin` in `system:masters`) from the
    /// client CA (1 year). Later starts reuse them; a leaf is re-issued from the same CA when
    /// it no longer fits: the serving certificate when the requested SAN set differs from
    /// its own, either leaf when it is not from the current CA, its key does not match, or it
    /// expires within 90 days. CAs are never replaced silently.
    pub fn load_or_create(dir: &Path, opts: &PkiOptions) -> Result<Self> {
        let io = |op, source| PkiError::Io {
            op,
            path: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|e| io("creating directory", e))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io("setting permissions of", e))?;
        let server_ca = Ca::load_or_create(dir, "server-ca", "k8slite-server-ca")?;
        let client_ca = Ca::load_or_create(dir, "client-ca", "k8slite-client-ca")?;
        let request_header_ca =
            Ca::load_or_create(dir, "request-header-ca", "k8slite-request-header-ca")?;

        let sans = opts.serving_sans()?;
        let (serving, serving_not_after) = reuse_or_issue(
            dir,
            SERVING,
            &server_ca,
            |info| {
                if info.sans == sans {
                    return Ok(());
                }
                let added: Vec<String> = sans.difference(&info.sans).map(San::to_string).collect();
                let removed: Vec<String> =
                    info.sans.difference(&sans).map(San::to_string).collect();
                Err(format!(
                    "SANs changed (added {added:?}, removed {removed:?})"
                ))
            },
            || server_ca.issue("kube-apiserver", &[], &sans, Usage::Server),
        )?;
        let admin_groups = [ADMIN_GROUP.to_string()];
        let (admin, admin_not_after) = reuse_or_issue(
            dir,
            ADMIN,
            &client_ca,
            |info| {
                if info.identity.user == ADMIN_USER && info.identity.groups == admin_groups {
                    Ok(())
                } else {
                    Err(format!("unexpected subject {:?}", info.identity))
                }
            },
            || client_ca.issue(ADMIN_USER, &admin_groups, &BTreeSet::new(), Usage::Client),
        )?;
        Ok(Self {
            dir: dir.to_path_buf(),
            server_ca,
            client_ca,
            request_header_ca,
            serving,
            serving_not_after,
            admin,
            admin_not_after,
        })
    }

    /// Directory the PKI lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server CA certificate (PEM, byte-identical to `server-ca.crt`): what clients trust,
    /// and what the join token's hash covers.
    pub fn server_ca_pem(&self) -> &str {
        self.server_ca.cert_pem()
    }

    /// The client CA certificate (PEM): what client certificates must chain to.
    pub fn client_ca_pem(&self) -> &str {
        self.client_ca.cert_pem()
    }

    /// The request-header CA certificate (PEM), for front proxies.
    pub fn request_header_ca_pem(&self) -> &str {
        self.request_header_ca.cert_pem()
    }

    /// The API server's serving certificate (chain: leaf, server CA) and key.
    pub fn serving(&self) -> &CertAndKey {
        &self.serving
    }

    /// The admin client certificate (`system:admin` in `system:masters`; chain: leaf,
    /// client CA) and key.
    pub fn admin(&self) -> &CertAndKey {
        &self.admin
    }

    /// Issue a client certificate from the client CA: CN = `cn` (the user), one O per group
    /// (e.g. `system:node:<name>` in `system:nodes`). Valid one year; nothing is stored.
    pub fn issue_client_cert(&self, cn: &str, groups: &[String]) -> Result<CertAndKey> {
        self.client_ca
            .issue(cn, groups, &BTreeSet::new(), Usage::Client)
    }

    /// Issue a serving certificate from the server CA (a node's kubelet API) for `sans`
    /// (IP addresses or DNS names; at least one). Valid one year; nothing is stored.
    pub fn issue_serving_cert(&self, cn: &str, sans: &[String]) -> Result<CertAndKey> {
        let sans = sans
            .iter()
            .map(|s| San::parse(s))
            .collect::<Result<BTreeSet<_>>>()?;
        if sans.is_empty() {
            return Err(PkiError::invalid(
                format!("serving certificate for {cn:?}"),
                "no subject alternative names",
            ));
        }
        self.server_ca.issue(cn, &[], &sans, Usage::Server)
    }

    /// rustls configuration of the API server (ring provider): the serving certificate;
    /// client certificates verified against the client CA but **optional**, so a request
    /// without one completes the handshake and is answered 401 by the server; ALPN `h2`,
    /// `http/1.1`.
    pub fn server_tls_config(&self) -> Result<Arc<rustls::ServerConfig>> {
        crate::tls::server_config(&self.serving, self.client_ca.cert_pem())
    }

    /// When the first of the serving and admin certificates expires.
    pub fn leaf_expiry(&self) -> jiff::Timestamp {
        let secs = self.serving_not_after.min(self.admin_not_after);
        jiff::Timestamp::from_second(secs).unwrap_or(jiff::Timestamp::MIN)
    }

    /// Whether the serving or admin certificate expires within `within` (a renewal loop can
    /// then call [`Self::load_or_create`] again after removing them, or restart).
    pub fn needs_renewal(&self, within: Duration) -> bool {
        expires_within(self.serving_not_after.min(self.admin_not_after), within)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn opts(extra: &[&str]) -> PkiOptions {
        PkiOptions {
            cluster_domain: "cluster.local".into(),
            service_ip: "10.43.0.1".parse().expect("ip"),
            sans: extra.iter().map(|s| s.to_string()).collect(),
            hostname: "edge-1".into(),
        }
    }

    fn fingerprint(pem: &str) -> String {
        crate::ca_hash(&crate::first_cert_der(pem).expect("der"))
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    }

    fn sans_of(pki: &ClusterPki) -> BTreeSet<San> {
        pki.server_ca.check_leaf(pki.serving()).expect("leaf").sans
    }

    #[test]
    fn created_once_then_reused_with_k3s_names_and_modes() {
        let dir = tempfile::tempdir().expect("tmp");
        let tls = dir.path().join("server/tls");
        let a = ClusterPki::load_or_create(&tls, &opts(&["192.0.2.10"])).expect("create");
        let b = ClusterPki::load_or_create(&tls, &opts(&["192.0.2.10"])).expect("reload");
        assert_eq!(
            fingerprint(a.server_ca_pem()),
            fingerprint(b.server_ca_pem())
        );
        assert_eq!(
            fingerprint(a.client_ca_pem()),
            fingerprint(b.client_ca_pem())
        );
        assert_eq!(a.request_header_ca_pem(), b.request_header_ca_pem());
        assert_eq!(a.serving(), b.serving());
        assert_eq!(a.admin(), b.admin());
        for ca in ["server-ca", "client-ca", "request-header-ca"] {
            let pem = std::fs::read_to_string(tls.join(format!("{ca}.crt"))).expect(ca);
            let der = crate::first_cert_der(&pem).expect("der");
            let (_, x) = x509_parser::parse_x509_certificate(&der).expect("parse");
            let cn = x.subject().iter_common_name().next().expect("cn");
            let cn = cn.as_str().expect("cn str");
            assert!(cn.starts_with(&format!("k8slite-{ca}@")), "{cn}");
            let years = (x.validity().not_after.timestamp() - now()) / (365 * 86_400);
            assert!(years >= 9, "CA valid {years} years");
        }
        assert_eq!(mode(&tls), 0o700);
        for f in [
            "server-ca.key",
            "client-ca.key",
            "request-header-ca.key",
            "serving-kube-apiserver.key",
            "client-admin.key",
        ] {
            assert_eq!(mode(&tls.join(f)), 0o600, "{f}");
        }
        for f in [
            "server-ca.crt",
            "client-ca.crt",
            "request-header-ca.crt",
            "serving-kube-apiserver.crt",
            "client-admin.crt",
        ] {
            assert!(tls.join(f).is_file(), "{f}");
        }
        assert!(!a.needs_renewal(Duration::from_secs(300 * 86_400)));
        assert!(a.needs_renewal(Duration::from_secs(366 * 86_400)));
        assert!(a.leaf_expiry() > jiff::Timestamp::now());
    }

    #[test]
    fn serving_sans_cover_cluster_names_and_options() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = ClusterPki::load_or_create(dir.path(), &opts(&["192.0.2.10", "k8s.example.lan"]))
            .expect("create");
        let sans: Vec<String> = sans_of(&p).iter().map(San::to_string).collect();
        for s in [
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "localhost",
            "edge-1",
            "127.0.0.1",
            "::1",
            "10.43.0.1",
            "192.0.2.10",
            "k8s.example.lan",
        ] {
            assert!(sans.iter().any(|x| x == s), "{s} missing from {sans:?}");
        }
        assert_eq!(sans.len(), 11, "{sans:?}");
    }

    #[test]
    fn san_change_reissues_only_the_serving_cert() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = ClusterPki::load_or_create(dir.path(), &opts(&["192.0.2.10"])).expect("create");
        let b = ClusterPki::load_or_create(dir.path(), &opts(&["192.0.2.10", "edge.example.lan"]))
            .expect("added san");
        assert_eq!(a.server_ca_pem(), b.server_ca_pem(), "CA kept");
        assert_eq!(a.admin(), b.admin(), "admin kept");
        assert_ne!(a.serving(), b.serving(), "serving re-issued");
        assert!(sans_of(&b).contains(&San::Dns("edge.example.lan".into())));
        b.server_ca
            .check_leaf(b.serving())
            .expect("from the same CA");
        // Same set in another spelling: kept.
        let c = ClusterPki::load_or_create(dir.path(), &opts(&["EDGE.example.lan", "192.0.2.10"]))
            .expect("same");
        assert_eq!(b.serving(), c.serving());
        // A SAN removed: re-issued without it.
        let d = ClusterPki::load_or_create(dir.path(), &opts(&["edge.example.lan"])).expect("rm");
        assert_ne!(c.serving(), d.serving());
        assert!(!sans_of(&d).contains(&San::Ip("192.0.2.10".parse().expect("ip"))));
        // The file on disk is the new one.
        let on_disk =
            std::fs::read_to_string(dir.path().join("serving-kube-apiserver.crt")).expect("crt");
        assert_eq!(on_disk, d.serving().cert_pem);
    }

    #[test]
    fn broken_or_foreign_leaves_are_reissued() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = ClusterPki::load_or_create(dir.path(), &opts(&[])).expect("create");
        std::fs::write(dir.path().join("client-admin.crt"), "garbage").expect("corrupt");
        let other = tempfile::tempdir().expect("tmp");
        let o = ClusterPki::load_or_create(other.path(), &opts(&[])).expect("other");
        store_pair(dir.path(), SERVING, o.serving()).expect("foreign serving");
        let b = ClusterPki::load_or_create(dir.path(), &opts(&[])).expect("reload");
        assert_eq!(a.server_ca_pem(), b.server_ca_pem());
        b.client_ca.check_leaf(b.admin()).expect("admin re-issued");
        b.server_ca
            .check_leaf(b.serving())
            .expect("serving re-issued");
        assert_ne!(b.serving(), o.serving());
        assert_ne!(b.admin(), a.admin());
    }

    #[test]
    fn bad_tls_san_is_reported() {
        let dir = tempfile::tempdir().expect("tmp");
        let err = ClusterPki::load_or_create(dir.path(), &opts(&["not a name"]))
            .expect_err("invalid san")
            .to_string();
        assert!(err.contains("\"not a name\""), "{err}");
    }

    #[test]
    fn admin_identity_and_issued_certs() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = ClusterPki::load_or_create(dir.path(), &opts(&[])).expect("create");
        let id =
            crate::identity_from_cert(&crate::first_cert_der(&p.admin().cert_pem).expect("der"))
                .expect("identity");
        assert_eq!(id.user, "system:admin");
        assert_eq!(id.groups, vec!["system:masters".to_string()]);

        let node = p
            .issue_client_cert("system:node:n1", &["system:nodes".to_string()])
            .expect("node cert");
        let id = crate::identity_from_cert(&crate::first_cert_der(&node.cert_pem).expect("der"))
            .expect("identity");
        assert_eq!(id.user, "system:node:n1");
        assert_eq!(id.groups, vec!["system:nodes".to_string()]);
        p.client_ca.check_leaf(&node).expect("from the client CA");

        let kubelet = p
            .issue_serving_cert("n1", &["n1".into(), "192.0.2.21".into()])
            .expect("kubelet serving cert");
        let info = p
            .server_ca
            .check_leaf(&kubelet)
            .expect("from the server CA");
        assert_eq!(info.sans.len(), 2);
        assert!(p.issue_serving_cert("n1", &[]).is_err(), "needs a SAN");
        assert!(p.issue_client_cert("", &[]).is_err(), "needs a CN");
        assert!(format!("{:?}", p.admin()).contains("<redacted>"));
    }

    #[test]
    fn cluster_pki_can_be_shared_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<ClusterPki>();
    }
}

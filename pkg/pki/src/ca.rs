//! Certificate authorities and the certificates they issue.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use crate::files::{read_optional, write_atomic};
use crate::{PkiError, Result};

const CA_VALIDITY_DAYS: i64 = 3650;
const LEAF_VALIDITY_DAYS: i64 = 365;

/// Inputs for the serving certificate.
#[derive(Clone, Debug)]
pub struct PkiOptions {
    /// Cluster domain (`cluster.local`).
    pub cluster_domain: String,
    /// First address of the service CIDR (the `kubernetes` Service).
    pub service_ip: IpAddr,
    /// Extra SANs: node/advertise IPs and `--tls-san` values (IPs or DNS names).
    pub sans: Vec<String>,
    /// This machine's hostname.
    pub hostname: String,
}

/// A PEM certificate (chain) and its PEM private key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertAndKey {
    /// Certificate, PEM.
    pub cert_pem: String,
    /// Private key, PEM.
    pub key_pem: String,
}

/// One CA: its certificate and key.
struct Ca {
    cert_pem: String,
    key: KeyPair,
    name: &'static str,
}

impl Ca {
    fn issuer(&self) -> Result<Issuer<'static, &KeyPair>> {
        Issuer::from_ca_cert_pem(&self.cert_pem, &self.key).map_err(|source| PkiError::Cert {
            what: format!("{} issuer", self.name),
            source,
        })
    }
}

/// The cluster's CAs and the server's own certificates.
pub struct ClusterPki {
    dir: PathBuf,
    server_ca: Ca,
    client_ca: Ca,
    request_header_ca: Ca,
    serving: CertAndKey,
    admin: CertAndKey,
}

fn cert_err(what: &str) -> impl FnOnce(rcgen::Error) -> PkiError + '_ {
    move |source| PkiError::Cert {
        what: what.to_string(),
        source,
    }
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(days);
}

fn load_or_create_ca(dir: &Path, file: &str, name: &'static str) -> Result<Ca> {
    let crt = dir.join(format!("{file}.crt"));
    let key = dir.join(format!("{file}.key"));
    if let (Some(cert_pem), Some(key_pem)) = (read_optional(&crt)?, read_optional(&key)?) {
        let key = KeyPair::from_pem(&key_pem).map_err(|e| PkiError::Parse {
            what: key.display().to_string(),
            message: e.to_string(),
        })?;
        return Ok(Ca {
            cert_pem,
            key,
            name,
        });
    }
    let key_pair = KeyPair::generate().map_err(cert_err(name))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        format!("{name}@{}", OffsetDateTime::now_utc().unix_timestamp()),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, CA_VALIDITY_DAYS);
    let cert = params.self_signed(&key_pair).map_err(cert_err(name))?;
    write_atomic(&key, key_pair.serialize_pem().as_bytes(), 0o600)?;
    write_atomic(&crt, cert.pem().as_bytes(), 0o644)?;
    tracing::info!(ca = name, path = %crt.display(), "created certificate authority");
    Ok(Ca {
        cert_pem: cert.pem(),
        key: key_pair,
        name,
    })
}

fn san(s: &str) -> Result<SanType> {
    match s.parse::<IpAddr>() {
        Ok(ip) => Ok(SanType::IpAddress(ip)),
        Err(_) => Ok(SanType::DnsName(s.try_into().map_err(
            |e: rcgen::Error| PkiError::Cert {
                what: format!("SAN {s:?}"),
                source: e,
            },
        )?)),
    }
}

fn issue(ca: &Ca, cn: &str, orgs: &[String], sans: &[String], server: bool) -> Result<CertAndKey> {
    let key = KeyPair::generate().map_err(cert_err(cn))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    for o in orgs {
        dn.push(DnType::OrganizationName, o.as_str());
    }
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.subject_alt_names = sans.iter().map(|s| san(s)).collect::<Result<_>>()?;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![if server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, LEAF_VALIDITY_DAYS);
    let issuer = ca.issuer()?;
    let cert = params.signed_by(&key, &issuer).map_err(cert_err(cn))?;
    Ok(CertAndKey {
        cert_pem: format!("{}{}", cert.pem(), ca.cert_pem),
        key_pem: key.serialize_pem(),
    })
}

/// SANs of an existing certificate (DNS names and IPs, as strings).
fn existing_sans(cert_pem: &str) -> Option<Vec<String>> {
    let der = first_der(cert_pem)?;
    let (_, x509) = x509_parser::parse_x509_certificate(&der).ok()?;
    let ext = x509.subject_alternative_name().ok()??;
    let mut out = Vec::new();
    for n in &ext.value.general_names {
        match n {
            x509_parser::extensions::GeneralName::DNSName(d) => out.push(d.to_string()),
            x509_parser::extensions::GeneralName::IPAddress(b) => match b.len() {
                4 => out.push(IpAddr::from(<[u8; 4]>::try_from(*b).ok()?).to_string()),
                16 => out.push(IpAddr::from(<[u8; 16]>::try_from(*b).ok()?).to_string()),
                _ => {}
            },
            _ => {}
        }
    }
    Some(out)
}

/// DER of the first certificate in a PEM bundle.
pub(crate) fn first_der(pem: &str) -> Option<Vec<u8>> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    Some(p.contents)
}

fn load_pair(dir: &Path, file: &str) -> Result<Option<CertAndKey>> {
    match (
        read_optional(&dir.join(format!("{file}.crt")))?,
        read_optional(&dir.join(format!("{file}.key")))?,
    ) {
        (Some(cert_pem), Some(key_pem)) => Ok(Some(CertAndKey { cert_pem, key_pem })),
        _ => Ok(None),
    }
}

fn store_pair(dir: &Path, file: &str, ck: &CertAndKey) -> Result<()> {
    write_atomic(
        &dir.join(format!("{file}.key")),
        ck.key_pem.as_bytes(),
        0o600,
    )?;
    write_atomic(
        &dir.join(format!("{file}.crt")),
        ck.cert_pem.as_bytes(),
        0o644,
    )
}

impl ClusterPki {
    /// Load the PKI from `dir` (`<data-dir>/server/tls`), creating what is missing. The serving
    /// certificate is re-issued from the same CA when the requested SANs are not all on it.
    pub fn load_or_create(dir: &Path, opts: &PkiOptions) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|source| PkiError::Io {
            op: "creating directory",
            path: dir.display().to_string(),
            source,
        })?;
        let server_ca = load_or_create_ca(dir, "server-ca", "k8slite-server-ca")?;
        let client_ca = load_or_create_ca(dir, "client-ca", "k8slite-client-ca")?;
        let request_header_ca =
            load_or_create_ca(dir, "request-header-ca", "k8slite-request-header-ca")?;
        let mut sans: Vec<String> = vec![
            "kubernetes".into(),
            "kubernetes.default".into(),
            "kubernetes.default.svc".into(),
            format!("kubernetes.default.svc.{}", opts.cluster_domain),
            "localhost".into(),
            "127.0.0.1".into(),
            "::1".into(),
            opts.service_ip.to_string(),
        ];
        if !opts.hostname.is_empty() {
            sans.push(opts.hostname.clone());
        }
        for s in &opts.sans {
            if !sans.contains(s) {
                sans.push(s.clone());
            }
        }
        let serving = match load_pair(dir, "serving-kube-apiserver")? {
            Some(ck)
                if existing_sans(&ck.cert_pem).is_some_and(|have| {
                    sans.iter()
                        .all(|s| have.iter().any(|h| h.eq_ignore_ascii_case(s)))
                }) =>
            {
                ck
            }
            existing => {
                if existing.is_some() {
                    tracing::info!("serving certificate lacks requested SANs; re-issuing it");
                }
                let ck = issue(&server_ca, "kube-apiserver", &[], &sans, true)?;
                store_pair(dir, "serving-kube-apiserver", &ck)?;
                ck
            }
        };
        let admin = match load_pair(dir, "client-admin")? {
            Some(ck) => ck,
            None => {
                let ck = issue(
                    &client_ca,
                    "system:admin",
                    &["system:masters".to_string()],
                    &[],
                    false,
                )?;
                store_pair(dir, "client-admin", &ck)?;
                ck
            }
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            server_ca,
            client_ca,
            request_header_ca,
            serving,
            admin,
        })
    }

    /// Directory the PKI lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server CA certificate (PEM): what clients trust.
    pub fn server_ca_pem(&self) -> &str {
        &self.server_ca.cert_pem
    }

    /// The client CA certificate (PEM): what client certificates must chain to.
    pub fn client_ca_pem(&self) -> &str {
        &self.client_ca.cert_pem
    }

    /// The request-header CA certificate (PEM), for front proxies.
    pub fn request_header_ca_pem(&self) -> &str {
        &self.request_header_ca.cert_pem
    }

    /// The API server's serving certificate and key.
    pub fn serving(&self) -> &CertAndKey {
        &self.serving
    }

    /// The admin client certificate (`system:admin` in `system:masters`) and key.
    pub fn admin(&self) -> &CertAndKey {
        &self.admin
    }

    /// Issue a client certificate from the client CA (node and component identities).
    pub fn issue_client_cert(&self, cn: &str, groups: &[String]) -> Result<CertAndKey> {
        issue(&self.client_ca, cn, groups, &[], false)
    }

    /// Issue a serving certificate from the server CA (kubelet API of a node).
    pub fn issue_serving_cert(&self, cn: &str, sans: &[String]) -> Result<CertAndKey> {
        issue(&self.server_ca, cn, &[], sans, true)
    }

    /// rustls configuration of the API: serving certificate, optional client certificates
    /// verified against the client CA (requests without one are answered 401 by the server).
    pub fn server_tls_config(&self) -> Result<Arc<rustls::ServerConfig>> {
        crate::tls::server_config(&self.serving, &self.client_ca.cert_pem)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(extra: &[&str]) -> PkiOptions {
        PkiOptions {
            cluster_domain: "cluster.local".into(),
            service_ip: "10.43.0.1".parse().expect("ip"),
            sans: extra.iter().map(|s| s.to_string()).collect(),
            hostname: "edge-1".into(),
        }
    }

    #[test]
    fn created_once_reused_and_reissued_on_new_san() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = ClusterPki::load_or_create(dir.path(), &opts(&["192.0.2.10"])).expect("create");
        let b = ClusterPki::load_or_create(dir.path(), &opts(&["192.0.2.10"])).expect("reload");
        assert_eq!(a.server_ca_pem(), b.server_ca_pem());
        assert_eq!(a.serving(), b.serving());
        assert_eq!(a.admin(), b.admin());
        use std::os::unix::fs::PermissionsExt;
        for f in [
            "server-ca.key",
            "client-ca.key",
            "request-header-ca.key",
            "serving-kube-apiserver.key",
            "client-admin.key",
        ] {
            let mode = std::fs::metadata(dir.path().join(f))
                .expect(f)
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
        let c = ClusterPki::load_or_create(dir.path(), &opts(&["192.0.2.10", "edge.example.lan"]))
            .expect("new san");
        assert_eq!(a.server_ca_pem(), c.server_ca_pem(), "CA kept");
        assert_ne!(a.serving(), c.serving(), "serving re-issued");
        let sans = existing_sans(&c.serving().cert_pem).expect("sans");
        for s in [
            "kubernetes.default.svc.cluster.local",
            "10.43.0.1",
            "127.0.0.1",
            "edge.example.lan",
            "192.0.2.10",
            "edge-1",
        ] {
            assert!(sans.iter().any(|x| x == s), "{s} missing from {sans:?}");
        }
    }

    #[test]
    fn admin_identity_and_node_certs() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = ClusterPki::load_or_create(dir.path(), &opts(&[])).expect("create");
        let id = crate::identity_from_cert(&first_der(&p.admin().cert_pem).expect("der"))
            .expect("identity");
        assert_eq!(id.user, "system:admin");
        assert_eq!(id.groups, vec!["system:masters".to_string()]);
        let node = p
            .issue_client_cert("system:node:n1", &["system:nodes".to_string()])
            .expect("node cert");
        let id =
            crate::identity_from_cert(&first_der(&node.cert_pem).expect("der")).expect("identity");
        assert_eq!(
            (id.user.as_str(), id.groups[0].as_str()),
            ("system:node:n1", "system:nodes")
        );
        p.server_tls_config().expect("tls config builds");
    }
}

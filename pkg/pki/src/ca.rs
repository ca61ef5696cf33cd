//! One certificate authority: loading or creating it, issuing leaf certificates and checking
//! that a stored leaf still belongs to it.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};

use crate::files::{read_optional, write_atomic};
use crate::identity::{Identity, identity_of};
use crate::{PkiError, Result, der};

/// Validity of a CA certificate.
pub(crate) const CA_VALIDITY_DAYS: i64 = 3650;
/// Validity of a leaf certificate.
pub(crate) const LEAF_VALIDITY_DAYS: i64 = 365;
/// Certificates are back-dated by this much to tolerate clock skew between machines.
const BACKDATE_SECS: i64 = 3600;
const DAY_SECS: i64 = 86_400;

/// A PEM certificate (chain: the certificate, then its CA) and its PEM private key.
#[derive(Clone, PartialEq, Eq)]
pub struct CertAndKey {
    /// Certificate followed by the issuing CA, PEM.
    pub cert_pem: String,
    /// Private key (PKCS#8), PEM.
    pub key_pem: String,
}

impl fmt::Debug for CertAndKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertAndKey")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// A subject alternative name, normalised (DNS names lower-case, IPs canonical).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum San {
    /// A DNS name.
    Dns(String),
    /// An IP address.
    Ip(IpAddr),
}

impl San {
    /// Parse an IP address (IPv6 optionally in brackets) or a DNS name (`*.` wildcard allowed).
    pub(crate) fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        let bare = s
            .strip_prefix('[')
            .and_then(|x| x.strip_suffix(']'))
            .unwrap_or(s);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(Self::Ip(ip));
        }
        let name = s.trim_end_matches('.').to_ascii_lowercase();
        let labels = name.strip_prefix("*.").unwrap_or(&name);
        let valid = !labels.is_empty()
            && name.len() <= 253
            && labels.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !valid {
            return Err(PkiError::invalid(
                format!("subject alternative name {s:?}"),
                "neither an IP address nor a valid DNS name",
            ));
        }
        Ok(Self::Dns(name))
    }

    fn to_rcgen(&self) -> Result<SanType> {
        Ok(match self {
            Self::Ip(ip) => SanType::IpAddress(*ip),
            Self::Dns(name) => SanType::DnsName(
                name.as_str()
                    .try_into()
                    .map_err(PkiError::cert(format!("subject alternative name {name:?}")))?,
            ),
        })
    }
}

impl fmt::Display for San {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dns(d) => f.write_str(d),
            Self::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// What a leaf certificate is for (its extended key usage).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Usage {
    /// TLS server (`serverAuth`).
    Server,
    /// TLS client (`clientAuth`).
    Client,
}

/// What a stored leaf certificate says, once it is known to belong to its CA and key.
#[derive(Clone, Debug)]
pub(crate) struct LeafInfo {
    /// Subject (CN, O).
    pub(crate) identity: Identity,
    /// Subject alternative names.
    pub(crate) sans: BTreeSet<San>,
    /// End of validity, unix seconds.
    pub(crate) not_after: i64,
    /// Serial number, colon-separated hex.
    pub(crate) serial: String,
}

/// A certificate authority: its certificate and key.
pub(crate) struct Ca {
    name: &'static str,
    cert_pem: String,
    cert_der: Vec<u8>,
    key: KeyPair,
}

/// Current time, unix seconds.
pub(crate) fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn set_validity(params: &mut CertificateParams, days: i64) -> Result<()> {
    let at = |secs: i64| {
        time::OffsetDateTime::from_unix_timestamp(secs)
            .map_err(|e| PkiError::invalid("certificate validity", e.to_string()))
    };
    let now = now();
    params.not_before = at(now - BACKDATE_SECS)?;
    params.not_after = at(now + days * DAY_SECS)?;
    Ok(())
}

/// DER of the first certificate of a PEM bundle.
pub(crate) fn first_der(pem: &str, what: &str) -> Result<Vec<u8>> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| PkiError::parse(what, e.to_string()))?;
    if p.label != "CERTIFICATE" {
        return Err(PkiError::invalid(
            what,
            format!("expected a CERTIFICATE PEM block, found {:?}", p.label),
        ));
    }
    Ok(p.contents)
}

fn parse_key(pem: &str, what: &str) -> Result<KeyPair> {
    KeyPair::from_pem(pem).map_err(|e| PkiError::parse(what, e))
}

impl Ca {
    /// Load `<file>.crt`/`<file>.key` from `dir`, or create a new CA named `<name>@<unix time>`.
    ///
    /// A certificate without its key is an error (the certificate may already be trusted
    /// elsewhere). A key without its certificate is what an interrupted first start leaves
    /// (the key is written first), so the CA is created anew.
    pub(crate) fn load_or_create(dir: &Path, file: &str, name: &'static str) -> Result<Self> {
        let crt_path = dir.join(format!("{file}.crt"));
        let key_path = dir.join(format!("{file}.key"));
        let crt = read_optional(&crt_path)?;
        let key = read_optional(&key_path)?;
        match (crt, key) {
            (Some(cert_pem), Some(key_pem)) => {
                crate::files::ensure_mode(&key_path, 0o600)?;
                Self::from_pem(name, cert_pem, &key_pem, &crt_path, &key_path)
            }
            (Some(_), None) => Err(PkiError::invalid(
                key_path.display().to_string(),
                format!(
                    "missing, but {} exists: restore the key or remove both files to create a new CA (every issued certificate and join token becomes invalid)",
                    crt_path.display()
                ),
            )),
            (None, key) => {
                if key.is_some() {
                    tracing::warn!(path = %key_path.display(), "CA key without certificate (interrupted first start?); creating a new CA");
                }
                Self::create(name, &crt_path, &key_path)
            }
        }
    }

    fn from_pem(
        name: &'static str,
        cert_pem: String,
        key_pem: &str,
        crt_path: &Path,
        key_path: &Path,
    ) -> Result<Self> {
        let crt_what = crt_path.display().to_string();
        let key = parse_key(key_pem, &key_path.display().to_string())?;
        let cert_der = first_der(&cert_pem, &crt_what)?;
        let (_, x509) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|e| PkiError::parse(&crt_what, e.to_string()))?;
        if !x509.is_ca() {
            return Err(PkiError::invalid(crt_what, "not a CA certificate"));
        }
        if x509.public_key().subject_public_key.data.as_ref() != key.der_bytes() {
            return Err(PkiError::invalid(
                key_path.display().to_string(),
                format!("does not match the certificate {crt_what}"),
            ));
        }
        if x509.validity().not_after.timestamp() < now() {
            tracing::warn!(path = %crt_what, "CA certificate has expired; certificates it issues will not verify");
        }
        // Fail now rather than at the first issuance.
        Issuer::from_ca_cert_der(&cert_der.as_slice().into(), &key)
            .map_err(PkiError::cert(format!("{name} issuer")))?;
        Ok(Self {
            name,
            cert_pem,
            cert_der,
            key,
        })
    }

    fn create(name: &'static str, crt_path: &Path, key_path: &Path) -> Result<Self> {
        let key = KeyPair::generate().map_err(PkiError::cert(format!("{name} key")))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("{name}@{}", now()));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, CA_VALIDITY_DAYS)?;
        let cert = params
            .self_signed(&key)
            .map_err(PkiError::cert(format!("{name} certificate")))?;
        // Key first: a key without a certificate is recognised as an interrupted creation.
        write_atomic(key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write_atomic(crt_path, cert.pem().as_bytes(), 0o644)?;
        tracing::info!(ca = name, path = %crt_path.display(), "created certificate authority");
        Ok(Self {
            name,
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key,
        })
    }

    /// The CA certificate, PEM, exactly as stored on disk.
    pub(crate) fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issue a leaf certificate: subject `O=<group>…, CN=<cn>`, the given SANs and usage,
    /// valid [`LEAF_VALIDITY_DAYS`], with a new P-256 key.
    pub(crate) fn issue(
        &self,
        cn: &str,
        groups: &[String],
        sans: &BTreeSet<San>,
        usage: Usage,
    ) -> Result<CertAndKey> {
        if cn.is_empty() {
            return Err(PkiError::invalid("certificate common name", "empty"));
        }
        let key = KeyPair::generate().map_err(PkiError::cert(format!("key for {cn:?}")))?;
        let cert_pem = self.sign(&key, cn, groups, sans, usage)?;
        Ok(CertAndKey {
            cert_pem,
            key_pem: key.serialize_pem(),
        })
    }

    /// Sign a leaf certificate for `public_key` (e.g. from a verified CSR: the private key
    /// never leaves its owner): subject `O=<group>…, CN=<cn>`, the given SANs and usage,
    /// valid [`LEAF_VALIDITY_DAYS`], a random serial. Returns the chain (leaf, then this CA)
    /// as PEM.
    pub(crate) fn sign(
        &self,
        public_key: &impl PublicKeyData,
        cn: &str,
        groups: &[String],
        sans: &BTreeSet<San>,
        usage: Usage,
    ) -> Result<String> {
        if cn.is_empty() {
            return Err(PkiError::invalid("certificate common name", "empty"));
        }
        let what = || format!("certificate for {cn:?}");
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        if let [group] = groups {
            dn.push(DnType::OrganizationName, group.as_str());
        }
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        params.subject_alt_names = sans.iter().map(San::to_rcgen).collect::<Result<_>>()?;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![match usage {
            Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        set_validity(&mut params, LEAF_VALIDITY_DAYS)?;
        let issuer = Issuer::from_ca_cert_der(&self.cert_der.as_slice().into(), &self.key)
            .map_err(PkiError::cert(format!("{} issuer", self.name)))?;
        let cert = params
            .signed_by(public_key, &issuer)
            .map_err(PkiError::cert(what()))?;
        let leaf_pem = if groups.len() > 1 {
            // Several O attributes: rcgen keeps one per type, so set the subject ourselves.
            let mut attributes: Vec<(&[u8], &str)> = groups
                .iter()
                .map(|g| (der::OID_ORGANIZATION, g.as_str()))
                .collect();
            attributes.push((der::OID_COMMON_NAME, cn));
            let der = der::replace_subject(cert.der(), &der::name(&attributes), &self.key)?;
            pem_certificate(&der)
        } else {
            cert.pem()
        };
        Ok(format!("{leaf_pem}{}", self.cert_pem))
    }

    /// Check that `pair` is a certificate issued by this CA with the matching key, and say
    /// what it contains. The error is the reason it is not usable.
    pub(crate) fn check_leaf(&self, pair: &CertAndKey) -> std::result::Result<LeafInfo, String> {
        check_leaf_against(&self.cert_der, self.name, pair)
    }
}

/// Check that `pair` is a certificate issued by the CA `ca_der` (called `ca_name` in
/// messages) with the matching key, and say what it contains. The error is the reason it is
/// not usable.
pub(crate) fn check_leaf_against(
    ca_der: &[u8],
    ca_name: &str,
    pair: &CertAndKey,
) -> std::result::Result<LeafInfo, String> {
    let der = first_der(&pair.cert_pem, "certificate").map_err(|e| e.to_string())?;
    let (_, x509) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| format!("unparsable certificate: {e}"))?;
    let key = KeyPair::from_pem(&pair.key_pem).map_err(|e| format!("unparsable key: {e}"))?;
    if x509.public_key().subject_public_key.data.as_ref() != key.der_bytes() {
        return Err("key does not match the certificate".into());
    }
    let (_, ca) = x509_parser::parse_x509_certificate(ca_der)
        .map_err(|e| format!("unparsable CA certificate: {e}"))?;
    if x509.issuer() != ca.subject() || x509.verify_signature(Some(ca.public_key())).is_err() {
        return Err(format!("not issued by the current {ca_name}"));
    }
    let identity = identity_of(&x509).map_err(|e| e.to_string())?;
    Ok(LeafInfo {
        identity,
        sans: sans_of(&x509),
        not_after: x509.validity().not_after.timestamp(),
        serial: x509.raw_serial_as_string(),
    })
}

/// A random positive 16-byte serial number (RFC 5280: unique per CA, at most 20 bytes).
fn random_serial() -> rcgen::SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    rcgen::SerialNumber::from_slice(&bytes)
}

pub(crate) fn pem_certificate(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Subject alternative names of a certificate (DNS names and IPs).
fn sans_of(x509: &x509_parser::certificate::X509Certificate<'_>) -> BTreeSet<San> {
    use x509_parser::extensions::GeneralName;
    let mut out = BTreeSet::new();
    let Ok(Some(ext)) = x509.subject_alternative_name() else {
        return out;
    };
    for name in &ext.value.general_names {
        match name {
            GeneralName::DNSName(d) => {
                out.insert(San::Dns(d.to_ascii_lowercase()));
            }
            GeneralName::IPAddress(b) => {
                if let Ok(v4) = <[u8; 4]>::try_from(*b) {
                    out.insert(San::Ip(IpAddr::from(v4)));
                } else if let Ok(v6) = <[u8; 16]>::try_from(*b) {
                    out.insert(San::Ip(IpAddr::from(v6)));
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn san_parsing_normalises_and_rejects() {
        let p = |s| San::parse(s).expect(s);
        assert_eq!(p("10.43.0.1"), San::Ip("10.43.0.1".parse().expect("ip")));
        assert_eq!(p("[::1]"), San::Ip("::1".parse().expect("ip")));
        assert_eq!(p("0:0::1"), p("::1"));
        assert_eq!(
            p("Edge-1.Example.LAN."),
            San::Dns("edge-1.example.lan".into())
        );
        assert_eq!(p("*.apps.example"), San::Dns("*.apps.example".into()));
        for bad in [
            "",
            "a b",
            "-x.example",
            "x..y",
            "*.",
            "under_score",
            "ünïcode",
        ] {
            let err = San::parse(bad).expect_err(bad).to_string();
            assert!(err.contains("subject alternative name"), "{err}");
        }
    }

    #[test]
    fn several_groups_are_separate_o_attributes_and_the_signature_verifies() {
        let dir = tempfile::tempdir().expect("tmp");
        let ca = Ca::load_or_create(dir.path(), "client-ca", "k8slite-client-ca").expect("ca");
        let groups: Vec<String> = ["system:masters", "devs", "ops"].map(String::from).into();
        let pair = ca
            .issue("alice", &groups, &BTreeSet::new(), Usage::Client)
            .expect("issue");
        let info = ca.check_leaf(&pair).expect("issued by the CA, key matches");
        assert_eq!(info.identity.user, "alice");
        assert_eq!(info.identity.groups, groups);
        assert!(info.not_after > now() + 364 * DAY_SECS);

        let other = tempfile::tempdir().expect("tmp");
        let other_ca =
            Ca::load_or_create(other.path(), "client-ca", "k8slite-client-ca").expect("other ca");
        assert!(other_ca.check_leaf(&pair).is_err(), "foreign CA");
    }

    #[test]
    fn ca_without_key_is_an_error_and_key_without_ca_is_recreated() {
        let dir = tempfile::tempdir().expect("tmp");
        let ca = Ca::load_or_create(dir.path(), "server-ca", "k8slite-server-ca").expect("ca");
        std::fs::remove_file(dir.path().join("server-ca.key")).expect("rm key");
        let err = Ca::load_or_create(dir.path(), "server-ca", "k8slite-server-ca")
            .err()
            .expect("missing key refused")
            .to_string();
        assert!(
            err.contains("server-ca.key") && err.contains("missing"),
            "{err}"
        );

        std::fs::remove_file(dir.path().join("server-ca.crt")).expect("rm crt");
        std::fs::write(dir.path().join("server-ca.key"), b"leftover").expect("key");
        let again = Ca::load_or_create(dir.path(), "server-ca", "k8slite-server-ca").expect("new");
        assert_ne!(again.cert_pem(), ca.cert_pem());

        // A key that does not belong to the certificate.
        let other = tempfile::tempdir().expect("tmp");
        Ca::load_or_create(other.path(), "server-ca", "k8slite-server-ca").expect("other");
        std::fs::copy(
            other.path().join("server-ca.key"),
            dir.path().join("server-ca.key"),
        )
        .expect("copy");
        let err = Ca::load_or_create(dir.path(), "server-ca", "k8slite-server-ca")
            .err()
            .expect("mismatch refused")
            .to_string();
        assert!(err.contains("does not match"), "{err}");
    }
}

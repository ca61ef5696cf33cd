//! Node certificates: what a joining agent asks for and what the server signs.
//!
//! The agent generates its two key pairs itself and sends **certificate signing requests**
//! (PKCS#10, PEM) together with its node name and addresses; the server signs
//! - a client certificate `CN=system:node:<name>, O=system:nodes` from the client CA (the
//!   API server maps it to user `system:node:<name>` in group `system:nodes`), and
//! - a kubelet serving certificate `CN=<name>` from the server CA with SANs = the node name,
//!   its addresses, `localhost` and `127.0.0.1`.
//!
//! The server uses only the public key of each CSR (after checking its signature, which proves
//! the agent holds the private key); subject and extensions of the CSR are ignored and set by
//! the server, so a token holder cannot ask for another group or usage. Private keys never
//! travel over the network.

use std::collections::BTreeSet;
use std::fmt;

use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType, KeyPair,
};
use serde::{Deserialize, Serialize};

use crate::ca::{CertAndKey, San, Usage, check_leaf_against, first_der};
use crate::{ClusterPki, PkiError, Result};

/// Path of the join endpoint on the API server (`POST`, bearer = the join token).
pub const NODE_CERTS_PATH: &str = "/v1-k8slite/node-certs";
/// Group of every node's client certificate.
pub const NODES_GROUP: &str = "system:nodes";
/// Most addresses a node may ask to have in its serving certificate.
const MAX_ADDRESSES: usize = 32;

/// The user name of node `name`: `system:node:<name>`.
pub fn node_user(name: &str) -> String {
    format!("system:node:{name}")
}

/// Body of `POST /v1-k8slite/node-certs` (JSON, camelCase).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeCertRequest {
    /// The node name (a lower-case DNS name).
    pub node_name: String,
    /// The node's addresses (IPs or DNS names) for the serving certificate's SANs.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// CSR (PEM) for the client certificate; only its public key is used.
    pub client_csr: String,
    /// CSR (PEM) for the kubelet serving certificate; only its public key is used.
    pub serving_csr: String,
}

/// Answer of `POST /v1-k8slite/node-certs` (JSON, camelCase).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeCertResponse {
    /// Client certificate chain (leaf, client CA), PEM.
    pub client_cert: String,
    /// Kubelet serving certificate chain (leaf, server CA), PEM.
    pub serving_cert: String,
    /// The server CA (what the agent trusts for the API), PEM.
    pub server_ca: String,
    /// The client CA (what the kubelet API verifies the API server's client certificate
    /// with), PEM.
    pub client_ca: String,
}

/// The private keys that belong to a [`NodeCertRequest`]; they stay on the node.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeKeys {
    /// Key of the client certificate (PKCS#8 PEM).
    pub client_key_pem: String,
    /// Key of the serving certificate (PKCS#8 PEM).
    pub serving_key_pem: String,
}

impl fmt::Debug for NodeKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NodeKeys(<redacted>)")
    }
}

/// Check a node name: a lower-case DNS name without wildcard (what a Node may be called).
pub fn validate_node_name(name: &str) -> Result<()> {
    let invalid = |reason: &str| PkiError::invalid(format!("node name {name:?}"), reason);
    if name.is_empty() {
        return Err(invalid("empty"));
    }
    if name.bytes().any(|b| b.is_ascii_uppercase()) || name.contains('*') || name.ends_with('.') {
        return Err(invalid("must be a lower-case DNS name"));
    }
    match San::parse(name) {
        Ok(San::Dns(_)) => Ok(()),
        Ok(San::Ip(_)) => Err(invalid("must be a DNS name, not an IP address")),
        Err(_) => Err(invalid("must be a lower-case DNS name")),
    }
}

fn csr(cn: &str, key: &KeyPair) -> Result<String> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params
        .serialize_request(key)
        .and_then(|r| r.pem())
        .map_err(PkiError::cert(format!("signing request for {cn:?}")))
}

/// New key pairs and the request for node `node_name` with `addresses` (what the agent
/// sends; the keys stay with it).
pub fn node_cert_request(
    node_name: &str,
    addresses: &[String],
) -> Result<(NodeCertRequest, NodeKeys)> {
    validate_node_name(node_name)?;
    let client = KeyPair::generate().map_err(PkiError::cert("node client key"))?;
    let serving = KeyPair::generate().map_err(PkiError::cert("node serving key"))?;
    let req = NodeCertRequest {
        node_name: node_name.to_string(),
        addresses: addresses.to_vec(),
        client_csr: csr(&node_user(node_name), &client)?,
        serving_csr: csr(node_name, &serving)?,
    };
    let keys = NodeKeys {
        client_key_pem: client.serialize_pem(),
        serving_key_pem: serving.serialize_pem(),
    };
    Ok((req, keys))
}

/// The SANs of node `name`'s serving certificate: its name, `localhost`, 127.0.0.1 and
/// `addresses`.
fn serving_sans(name: &str, addresses: &[String]) -> Result<BTreeSet<San>> {
    let mut out = BTreeSet::new();
    for s in [name, "localhost", "127.0.0.1"]
        .into_iter()
        .chain(addresses.iter().map(String::as_str))
    {
        if !s.trim().is_empty() {
            out.insert(San::parse(s)?);
        }
    }
    Ok(out)
}

fn parse_csr(pem: &str, what: &str) -> Result<CertificateSigningRequestParams> {
    CertificateSigningRequestParams::from_pem(pem).map_err(|e| PkiError::parse(what, e))
}

impl ClusterPki {
    /// Sign node certificates for `req` (see the module documentation). Errors name what is
    /// wrong with the request (invalid node name or address, unparsable CSR or bad signature).
    pub fn sign_node_certs(&self, req: &NodeCertRequest) -> Result<NodeCertResponse> {
        validate_node_name(&req.node_name)?;
        if req.addresses.len() > MAX_ADDRESSES {
            return Err(PkiError::invalid(
                "node addresses",
                format!("at most {MAX_ADDRESSES} allowed"),
            ));
        }
        let sans = serving_sans(&req.node_name, &req.addresses)?;
        let client_csr = parse_csr(&req.client_csr, "client certificate signing request")?;
        let serving_csr = parse_csr(&req.serving_csr, "serving certificate signing request")?;
        let client_cert = self.client_ca.sign(
            &client_csr.public_key,
            &node_user(&req.node_name),
            &[NODES_GROUP.to_string()],
            &BTreeSet::new(),
            Usage::Client,
        )?;
        let serving_cert = self.server_ca.sign(
            &serving_csr.public_key,
            &req.node_name,
            &[],
            &sans,
            Usage::Server,
        )?;
        tracing::info!(node = %req.node_name, "signed node client and serving certificates");
        Ok(NodeCertResponse {
            client_cert,
            serving_cert,
            server_ca: self.server_ca_pem().to_string(),
            client_ca: self.client_ca_pem().to_string(),
        })
    }
}

/// What a stored leaf certificate says, once it is known to belong to its CA and key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafSummary {
    /// Subject: CN as user, O values as groups.
    pub identity: crate::Identity,
    /// Subject alternative names: DNS names (lower-case, sorted), then IPs (canonical, sorted).
    pub sans: Vec<String>,
    /// End of validity, unix seconds.
    pub not_after: i64,
    /// Serial number (colon-separated hex).
    pub serial: String,
}

/// Check that `cert_pem` (a chain whose first certificate is the leaf) was issued by the CA
/// `ca_pem` and that `key_pem` is its key, and say what it contains. The error says why it is
/// not usable.
pub fn inspect_leaf(
    cert_pem: &str,
    key_pem: &str,
    ca_pem: &str,
) -> std::result::Result<LeafSummary, String> {
    let ca_der = first_der(ca_pem, "CA certificate").map_err(|e| e.to_string())?;
    let pair = CertAndKey {
        cert_pem: cert_pem.to_string(),
        key_pem: key_pem.to_string(),
    };
    let info = check_leaf_against(&ca_der, "CA", &pair)?;
    Ok(LeafSummary {
        identity: info.identity,
        sans: info.sans.iter().map(San::to_string).collect(),
        not_after: info.not_after,
        serial: info.serial,
    })
}

/// Normalise an address or name the way certificate SANs are compared (`[::1]` → `::1`,
/// DNS names lower-case without a trailing dot). `None` when it is neither.
pub fn normalize_san(s: &str) -> Option<String> {
    San::parse(s).ok().map(|s| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PkiOptions;

    fn pki(dir: &std::path::Path) -> ClusterPki {
        ClusterPki::load_or_create(
            dir,
            &PkiOptions {
                cluster_domain: "cluster.local".into(),
                service_ip: "10.43.0.1".parse().expect("ip"),
                sans: vec![],
                hostname: "server".into(),
            },
        )
        .expect("pki")
    }

    #[test]
    fn node_certs_from_csrs_carry_the_node_identity_and_sans() {
        let dir = tempfile::tempdir().expect("tmp");
        let pki = pki(dir.path());
        let addrs = vec!["192.0.2.7".to_string(), "edge-7.lan".to_string()];
        let (req, keys) = node_cert_request("edge-7", &addrs).expect("request");
        assert!(req.client_csr.contains("BEGIN CERTIFICATE REQUEST"));
        assert!(!format!("{keys:?}").contains("PRIVATE"), "Debug redacts");
        let resp = pki.sign_node_certs(&req).expect("sign");
        assert_eq!(resp.server_ca, pki.server_ca_pem());
        assert_eq!(resp.client_ca, pki.client_ca_pem());

        let client = inspect_leaf(&resp.client_cert, &keys.client_key_pem, &resp.client_ca)
            .expect("client cert from the client CA with the agent's key");
        assert_eq!(client.identity.user, "system:node:edge-7");
        assert_eq!(client.identity.groups, ["system:nodes"]);
        assert!(client.sans.is_empty());
        assert!(client.not_after > crate::ca::now() + 300 * 86_400);
        // Signed by the client CA, not the server CA.
        assert!(inspect_leaf(&resp.client_cert, &keys.client_key_pem, &resp.server_ca).is_err());
        // The identity the API server derives from the certificate.
        let der = crate::first_cert_der(&resp.client_cert).expect("der");
        let id = crate::identity_from_cert(&der).expect("identity");
        assert_eq!(
            (id.user.as_str(), id.groups.as_slice()),
            (
                "system:node:edge-7",
                ["system:nodes".to_string()].as_slice()
            )
        );

        let serving = inspect_leaf(&resp.serving_cert, &keys.serving_key_pem, &resp.server_ca)
            .expect("serving cert from the server CA");
        assert_eq!(serving.identity.user, "edge-7");
        assert_eq!(
            serving.sans,
            [
                "edge-7",
                "edge-7.lan",
                "localhost",
                "127.0.0.1",
                "192.0.2.7"
            ]
        );
        assert_ne!(client.serial, serving.serial);
        // A key that is not the one of the CSR does not match.
        assert!(
            inspect_leaf(&resp.client_cert, &keys.serving_key_pem, &resp.client_ca)
                .expect_err("wrong key")
                .contains("key does not match")
        );
    }

    #[test]
    fn the_csr_subject_is_ignored_and_bad_requests_are_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let pki = pki(dir.path());
        // A CSR asking for system:masters gets the node identity all the same.
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "system:masters");
        dn.push(DnType::CommonName, "admin");
        params.distinguished_name = dn;
        let evil = params
            .serialize_request(&key)
            .and_then(|r| r.pem())
            .expect("csr");
        let (mut req, _) = node_cert_request("n1", &[]).expect("request");
        req.client_csr = evil;
        let resp = pki.sign_node_certs(&req).expect("sign");
        let der = crate::first_cert_der(&resp.client_cert).expect("der");
        let id = crate::identity_from_cert(&der).expect("identity");
        assert_eq!(id.user, "system:node:n1");
        assert_eq!(id.groups, ["system:nodes"]);

        for name in ["", "Upper", "a b", "*.x", "10.0.0.1", "x."] {
            let mut r = req.clone();
            r.node_name = name.into();
            let err = pki.sign_node_certs(&r).expect_err(name).to_string();
            assert!(err.contains("node name"), "{err}");
        }
        let mut r = req.clone();
        r.addresses = vec!["not an address".into()];
        assert!(pki.sign_node_certs(&r).is_err());
        let mut r = req.clone();
        r.client_csr = "garbage".into();
        let err = pki.sign_node_certs(&r).expect_err("garbage").to_string();
        assert!(err.contains("client certificate signing request"), "{err}");
        // A tampered CSR (signature no longer verifies) is refused.
        let mut r = req.clone();
        let (other, _) = node_cert_request("n2", &[]).expect("request");
        let body = |pem: &str| -> Vec<u8> {
            let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("pem");
            p.contents
        };
        let mut der = body(&req.serving_csr);
        let other_der = body(&other.serving_csr);
        // Swap in the other request's public key (same length for P-256 SPKIs).
        let spki = |d: &[u8]| {
            let (_, c) =
                <x509_parser::certification_request::X509CertificationRequest as x509_parser::prelude::FromDer<_>>::from_der(d)
                    .expect("csr");
            c.certification_request_info.subject_pki.raw.to_vec()
        };
        let (mine, theirs) = (spki(&der), spki(&other_der));
        let at = der
            .windows(mine.len())
            .position(|w| w == mine.as_slice())
            .expect("spki in der");
        der[at..at + theirs.len()].copy_from_slice(&theirs);
        r.serving_csr =
            crate::ca::pem_certificate(&der).replace("CERTIFICATE", "CERTIFICATE REQUEST");
        assert!(pki.sign_node_certs(&r).is_err(), "tampered CSR refused");
    }

    #[test]
    fn normalised_sans() {
        assert_eq!(normalize_san("[::1]").as_deref(), Some("::1"));
        assert_eq!(normalize_san("Node-1.").as_deref(), Some("node-1"));
        assert_eq!(normalize_san("a b"), None);
        assert_eq!(node_user("x"), "system:node:x");
    }
}

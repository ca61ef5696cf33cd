//! Who a client certificate names: CN → user, every O → a group (Kubernetes' x509 authn).

use x509_parser::certificate::X509Certificate;

use crate::{PkiError, Result};

/// The identity a client certificate carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// User name: the subject's (first) common name.
    pub user: String,
    /// Groups: every organization of the subject, in certificate order.
    pub groups: Vec<String>,
}

/// The identity in a DER certificate. It does **not** verify the certificate: call it on the
/// peer certificate rustls has already verified against the client CA.
pub fn identity_from_cert(der: &[u8]) -> Result<Identity> {
    let (_, x509) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| PkiError::parse("client certificate", e.to_string()))?;
    identity_of(&x509)
}

/// The identity of a parsed certificate.
pub(crate) fn identity_of(x509: &X509Certificate<'_>) -> Result<Identity> {
    let subject = x509.subject();
    let user = match subject.iter_common_name().next() {
        Some(cn) => cn
            .as_str()
            .map_err(|e| PkiError::parse("certificate common name", e.to_string()))?
            .to_string(),
        None => String::new(),
    };
    if user.is_empty() {
        return Err(PkiError::invalid(
            "client certificate",
            "subject has no common name",
        ));
    }
    let groups = subject
        .iter_organization()
        .map(|o| {
            o.as_str()
                .map(str::to_string)
                .map_err(|e| PkiError::parse("certificate organization", e.to_string()))
        })
        .collect::<Result<_>>()?;
    Ok(Identity { user, groups })
}

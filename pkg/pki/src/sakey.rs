//! The service-account signing key: an ECDSA P-256 key (ES256 JWTs) generated once into the
//! server's TLS directory (`service-account.key`, PKCS#8 PEM, mode 0600) and reused on restart.

use std::path::Path;

use rcgen::PublicKeyData;
use sha2::{Digest, Sha256};

use crate::files::{read_optional, write_atomic};
use crate::{PkiError, Result};

/// File name of the key inside the TLS directory.
pub const SERVICE_ACCOUNT_KEY_FILE: &str = "service-account.key";

/// The key material token signing and verification need.
#[derive(Clone)]
pub struct ServiceAccountKey {
    /// PKCS#8 DER of the private key.
    pub pkcs8_der: Vec<u8>,
    /// The public key as an uncompressed SEC1 point (what ES256 verification takes).
    pub public_raw: Vec<u8>,
    /// Key id: unpadded base64url of the SHA-256 of the public key's SubjectPublicKeyInfo DER
    /// (upstream's `kid`).
    pub kid: String,
}

impl std::fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl ServiceAccountKey {
    /// Load the key at `path`, or generate and write it when absent.
    pub fn load_or_create(path: &Path) -> Result<Self> {
        let what = path.display().to_string();
        let pair = match read_optional(path)? {
            Some(pem) => rcgen::KeyPair::from_pem(&pem).map_err(|e| PkiError::parse(&what, e))?,
            None => {
                let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                    .map_err(PkiError::cert("service-account key"))?;
                write_atomic(path, pair.serialize_pem().as_bytes(), 0o600)?;
                pair
            }
        };
        if !pair.is_compatible(&rcgen::PKCS_ECDSA_P256_SHA256) {
            return Err(PkiError::invalid(what, "not an ECDSA P-256 key"));
        }
        use base64::Engine as _;
        let kid = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(Sha256::digest(pair.subject_public_key_info()));
        Ok(Self {
            pkcs8_der: pair.serialized_der().to_vec(),
            public_raw: pair.public_key_raw().to_vec(),
            kid,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(SERVICE_ACCOUNT_KEY_FILE);
        let a = ServiceAccountKey::load_or_create(&path).expect("created");
        let b = ServiceAccountKey::load_or_create(&path).expect("loaded");
        assert_eq!(a.pkcs8_der, b.pkcs8_der);
        assert_eq!(a.kid, b.kid);
        assert_eq!(a.public_raw.len(), 65);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::write(&path, "garbage").expect("write");
        assert!(ServiceAccountKey::load_or_create(&path).is_err());
    }
}

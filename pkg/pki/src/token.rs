//! The join token: `K10<sha256 of the server CA bundle>::server:<secret>`. An agent pins the
//! CA by the hash before it sends the secret.

use std::path::Path;

use rand::Rng;
use sha2::{Digest, Sha256};

use crate::files::{read_optional, write_atomic};
use crate::{PkiError, Result};

/// A parsed join token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinToken {
    /// Hex SHA-256 of the server CA bundle, when the token carries one.
    pub ca_hash: Option<String>,
    /// User part (`server`).
    pub username: String,
    /// The secret.
    pub password: String,
}

/// Hex SHA-256 of a CA bundle (the PEM bytes as written to disk).
pub fn ca_hash(ca_pem: &[u8]) -> String {
    hex::encode(Sha256::digest(ca_pem))
}

impl JoinToken {
    /// Parse the full form `K10<hash>::<user>:<secret>` or a bare secret.
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix("K10") {
            let (hash, creds) = rest
                .split_once("::")
                .ok_or_else(|| PkiError::Token("expected K10<hash>::<user>:<secret>".into()))?;
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(PkiError::Token("the CA hash must be 64 hex digits".into()));
            }
            let (user, pass) = creds
                .split_once(':')
                .ok_or_else(|| PkiError::Token("expected <user>:<secret> after ::".into()))?;
            if user.is_empty() || pass.is_empty() {
                return Err(PkiError::Token("user and secret must not be empty".into()));
            }
            return Ok(Self {
                ca_hash: Some(hash.to_ascii_lowercase()),
                username: user.into(),
                password: pass.into(),
            });
        }
        if s.is_empty() || s.contains(char::is_whitespace) {
            return Err(PkiError::Token("empty or malformed token".into()));
        }
        Ok(Self {
            ca_hash: None,
            username: "server".into(),
            password: s.into(),
        })
    }

    /// Whether `ca_pem` matches the pinned hash (true when the token pins nothing).
    pub fn verify_ca(&self, ca_pem: &[u8]) -> bool {
        match &self.ca_hash {
            Some(h) => {
                let got = ca_hash(ca_pem);
                // constant-time comparison of equal-length hex strings
                got.len() == h.len()
                    && got
                        .bytes()
                        .zip(h.bytes())
                        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                        == 0
            }
            None => true,
        }
    }

    /// The token's string form.
    pub fn to_token_string(&self) -> String {
        match &self.ca_hash {
            Some(h) => format!("K10{h}::{}:{}", self.username, self.password),
            None => self.password.clone(),
        }
    }

    /// Read the token at `path`, or create one (0600) bound to `server_ca_pem`.
    pub fn load_or_create(path: &Path, server_ca_pem: &str) -> Result<Self> {
        if let Some(existing) = read_optional(path)? {
            return Self::parse(&existing);
        }
        let secret: String = rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(32)
            .map(char::from)
            .collect();
        let token = Self {
            ca_hash: Some(ca_hash(server_ca_pem.as_bytes())),
            username: "server".into(),
            password: secret,
        };
        write_atomic(
            path,
            format!("{}\n", token.to_token_string()).as_bytes(),
            0o600,
        )?;
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_roundtrip_and_pinning() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("token");
        let t = JoinToken::load_or_create(&p, "CA PEM").expect("create");
        let again = JoinToken::load_or_create(&p, "CA PEM").expect("reload");
        assert_eq!(t, again);
        let s = t.to_token_string();
        assert!(s.starts_with("K10") && s.contains("::server:"), "{s}");
        assert_eq!(JoinToken::parse(&s).expect("parse"), t);
        assert!(t.verify_ca(b"CA PEM"));
        assert!(!t.verify_ca(b"other CA"));
        assert!(JoinToken::parse("K10abc::server:x").is_err());
        assert_eq!(
            JoinToken::parse("justasecret")
                .expect("short form")
                .password,
            "justasecret"
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777,
            0o600
        );
    }
}

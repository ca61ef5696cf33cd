//! Just enough DER to give a certificate several `O` (group) attributes.
//!
//! rcgen 0.14 keeps one value per attribute type in a distinguished name (rustls/rcgen#81), but
//! Kubernetes puts every group of a client certificate in its own `O`. For such certificates
//! the subject Name of the certificate rcgen made is replaced by one built here and the
//! to-be-signed part is signed again with the issuer's key. Everything else (serial,
//! validity, extensions, signature algorithm) is kept byte for byte.

use rcgen::SigningKey;

use crate::{PkiError, Result};

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const UTF8_STRING: u8 = 0x0c;
const BIT_STRING: u8 = 0x03;
const EXPLICIT_0: u8 = 0xa0;

/// DER of the OID 2.5.4.10 (organizationName).
pub(crate) const OID_ORGANIZATION: &[u8] = &[0x55, 0x04, 0x0a];
/// DER of the OID 2.5.4.3 (commonName).
pub(crate) const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

/// One TLV: `tag`, definite length, `content`.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// The element at the front of `buf`: (tag, header length, total length). Only low tag
/// numbers and definite lengths, which is all DER certificates use.
fn element(buf: &[u8]) -> Option<(u8, usize, usize)> {
    let tag = *buf.first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let first = *buf.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let len = buf
            .get(2..2 + n)?
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, 2 + n)
    };
    let total = header.checked_add(len)?;
    (total <= buf.len()).then_some((tag, header, total))
}

/// A Name with one single-attribute RDN per `(oid, value)`, values as UTF8String.
pub(crate) fn name(attributes: &[(&[u8], &str)]) -> Vec<u8> {
    let mut rdns = Vec::new();
    for (oid, value) in attributes {
        let mut attr = tlv(OID, oid);
        attr.extend(tlv(UTF8_STRING, value.as_bytes()));
        rdns.extend(tlv(SET, &tlv(SEQUENCE, &attr)));
    }
    tlv(SEQUENCE, &rdns)
}

fn malformed(what: &str) -> PkiError {
    PkiError::invalid("certificate to re-sign", format!("malformed DER: {what}"))
}

/// Replace the subject of `cert_der` by `subject` (a DER Name) and sign it again with
/// `signer`, which must be the key of the certificate's issuer.
pub(crate) fn replace_subject(
    cert_der: &[u8],
    subject: &[u8],
    signer: &impl SigningKey,
) -> Result<Vec<u8>> {
    let (tag, header, total) = element(cert_der).ok_or_else(|| malformed("certificate"))?;
    if tag != SEQUENCE || total != cert_der.len() {
        return Err(malformed("certificate"));
    }
    let body = &cert_der[header..];
    let (tag, tbs_header, tbs_total) = element(body).ok_or_else(|| malformed("tbsCertificate"))?;
    if tag != SEQUENCE {
        return Err(malformed("tbsCertificate"));
    }
    let tbs = &body[tbs_header..tbs_total];
    let (_, _, alg_total) =
        element(&body[tbs_total..]).ok_or_else(|| malformed("signatureAlgorithm"))?;
    let signature_algorithm = &body[tbs_total..tbs_total + alg_total];

    // tbsCertificate: [0] version (optional), serialNumber, signature, issuer, validity, subject…
    let mut offset = 0;
    let mut skip = 4;
    if tbs.first() == Some(&EXPLICIT_0) {
        skip += 1;
    }
    for _ in 0..skip {
        let (_, _, len) = element(&tbs[offset..]).ok_or_else(|| malformed("tbsCertificate"))?;
        offset += len;
    }
    let (tag, _, subject_len) = element(&tbs[offset..]).ok_or_else(|| malformed("subject"))?;
    if tag != SEQUENCE {
        return Err(malformed("subject"));
    }

    let mut new_tbs = Vec::with_capacity(tbs.len() + subject.len());
    new_tbs.extend_from_slice(&tbs[..offset]);
    new_tbs.extend_from_slice(subject);
    new_tbs.extend_from_slice(&tbs[offset + subject_len..]);
    let new_tbs = tlv(SEQUENCE, &new_tbs);

    let signature = signer
        .sign(&new_tbs)
        .map_err(PkiError::cert("certificate signature"))?;
    let mut bits = Vec::with_capacity(signature.len() + 1);
    bits.push(0); // no unused bits
    bits.extend(signature);

    let mut cert = new_tbs;
    cert.extend_from_slice(signature_algorithm);
    cert.extend(tlv(BIT_STRING, &bits));
    Ok(tlv(SEQUENCE, &cert))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_round_trip() {
        for len in [0usize, 1, 127, 128, 255, 256, 65_535, 70_000] {
            let content = vec![7u8; len];
            let enc = tlv(SEQUENCE, &content);
            assert_eq!(element(&enc), Some((SEQUENCE, enc.len() - len, enc.len())));
        }
        assert_eq!(element(&[0x30, 0x05, 1]), None, "truncated");
        assert_eq!(element(&[0x30, 0x80]), None, "indefinite length");
    }
}

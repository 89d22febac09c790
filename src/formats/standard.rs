//! Standard Webhooks signatures: `webhook-signature: v1,<base64 HMAC-SHA256 of
//! "{webhook-id}.{webhook-timestamp}.{body}">`, one entry per key, space separated, so a
//! receiver can rotate its secret without losing a message.
//!
//! Secrets are written `whsec_<base64 of the key bytes>` (the spec's form); the prefix may be
//! left out, the rest is base64 all the same, as the Standard Webhooks libraries read it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The HMAC key of a secret: the base64 after `whsec_`, or the whole secret as base64
/// when it has no prefix, as the Standard Webhooks libraries read a secret (their
/// `Webhook(secret)` strips the prefix if there is one and decodes the rest). Until
/// 2026-12-08 a secret without the prefix was used as its own bytes, which no receiver
/// using such a library could verify; one that is not base64 is now refused at start and
/// by `redlight check`, naming the key.
pub fn decode_secret(secret: &str) -> Result<Vec<u8>, String> {
    let secret = secret.trim();
    if secret.is_empty() {
        return Err("the secret is empty".into());
    }
    let (b64, what) = match secret.strip_prefix("whsec_") {
        Some(b64) => (b64, "the part after `whsec_`"),
        None => (
            secret,
            "the secret (`whsec_` and the base64 of the key, or the base64 alone)",
        ),
    };
    match B64.decode(b64) {
        Ok(key) if !key.is_empty() => Ok(key),
        Ok(_) => Err("`whsec_` is followed by nothing".into()),
        Err(e) => Err(format!(
            "{what} is not base64 ({e}); the Standard Webhooks libraries receivers verify with \
             read a secret so"
        )),
    }
}

/// One `v1,<base64>` signature.
pub fn signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        // HMAC takes keys of any length; this arm cannot happen.
        Err(_) => return String::new(),
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
}

/// The `webhook-signature` header: one signature per key, space separated.
pub fn sign(keys: &[Vec<u8>], id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter()
        .map(|k| signature(k, id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Why a delivery failed verification.
#[derive(Debug, PartialEq, Eq)]
pub enum VerifyError {
    BadTimestamp,
    TooOld,
    NoMatch,
}

/// What a receiver does: recompute the HMAC with its secret and accept the message when any
/// `v1` entry matches (in constant time) and the timestamp is within `tolerance_s` of now.
pub fn verify(
    secret: &str,
    id: &str,
    timestamp: &str,
    signature_header: &str,
    body: &[u8],
    now_s: i64,
    tolerance_s: i64,
) -> Result<(), VerifyError> {
    let ts: i64 = timestamp.parse().map_err(|_| VerifyError::BadTimestamp)?;
    if (now_s - ts).abs() > tolerance_s {
        return Err(VerifyError::TooOld);
    }
    let key = decode_secret(secret).map_err(|_| VerifyError::NoMatch)?;
    for entry in signature_header.split(' ') {
        let Some(sig) = entry.strip_prefix("v1,") else {
            continue;
        };
        let Ok(sig) = B64.decode(sig) else {
            continue;
        };
        let Ok(mut mac) = HmacSha256::new_from_slice(&key) else {
            continue;
        };
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        if mac.verify_slice(&sig).is_ok() {
            return Ok(());
        }
    }
    Err(VerifyError::NoMatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification.
    #[test]
    fn the_specification_example_signs_as_published() {
        let key = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret");
        let body = br#"{"test": 2432232314}"#;
        let sig = signature(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert_eq!(
            verify(
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                "1614265330",
                &sig,
                body,
                1614265330,
                300
            ),
            Ok(())
        );
    }

    #[test]
    fn any_of_several_keys_verifies_and_a_wrong_one_does_not() {
        let old = decode_secret("whsec_b2xkLXNlY3JldC1rZXktMDEyMzQ1Njc4OQ==").expect("old");
        let new = decode_secret("whsec_bmV3LXNlY3JldC1rZXktMDEyMzQ1Njc4OQ==").expect("new");
        let header = sign(&[new, old], "id1", 100, b"{}");
        assert_eq!(header.split(' ').count(), 2);
        for s in [
            "whsec_b2xkLXNlY3JldC1rZXktMDEyMzQ1Njc4OQ==",
            "whsec_bmV3LXNlY3JldC1rZXktMDEyMzQ1Njc4OQ==",
        ] {
            assert_eq!(verify(s, "id1", "100", &header, b"{}", 100, 300), Ok(()));
        }
        assert_eq!(
            verify("whsec_d3Jvbmc=", "id1", "100", &header, b"{}", 100, 300),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            verify(
                "whsec_bmV3LXNlY3JldC1rZXktMDEyMzQ1Njc4OQ==",
                "id1",
                "100",
                &header,
                b"{ }",
                100,
                300
            ),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            verify(
                "whsec_bmV3LXNlY3JldC1rZXktMDEyMzQ1Njc4OQ==",
                "id1",
                "100",
                &header,
                b"{}",
                1000,
                300
            ),
            Err(VerifyError::TooOld)
        );
    }

    #[test]
    fn bad_secrets_are_explained() {
        assert!(decode_secret("").is_err());
        assert!(decode_secret("whsec_").is_err());
        assert!(
            decode_secret("whsec_***")
                .unwrap_err()
                .contains("not base64")
        );
        // Without the prefix the secret is base64 all the same, as the libraries read it:
        // the same key as with it; text that is not base64 is refused.
        assert_eq!(
            decode_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("unprefixed"),
            decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("prefixed")
        );
        let err = decode_secret("plain text!").expect_err("not base64");
        assert!(err.contains("not base64"), "{err}");
    }
}

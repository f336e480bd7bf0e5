//! The county's signed commands: a station configured with the county's
//! public key (`[mqtt] county_public_key`) carries out only commands
//! signed with it (`pithead_core::protocol::Signed`).

use std::borrow::Cow;

use base64::Engine as _;
use ed25519_dalek::{Signature, VerifyingKey};
use pithead_core::protocol::{SCHEMA, Signed, signed_bytes};

/// The county's public key from its base64 text.
pub fn county_key(text: &str) -> Result<VerifyingKey, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| format!("not base64: {e}"))?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|b: Vec<u8>| format!("an Ed25519 public key has 32 bytes, not {}", b.len()))?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| format!("not an Ed25519 public key: {e}"))
}

/// The command inside `payload` (published on `topic`), if it may be
/// carried out: with a key, only a command signed with it; without one,
/// an unsigned command, or a signed one unwrapped (unchecked). `Err` says
/// why not.
pub fn open<'a>(
    key: Option<&VerifyingKey>,
    topic: &str,
    payload: &'a [u8],
) -> Result<Cow<'a, [u8]>, String> {
    let signed = serde_json::from_slice::<Signed>(payload).ok();
    let Some(s) = signed else {
        return match key {
            None => Ok(Cow::Borrowed(payload)),
            Some(_) => {
                Err("unsigned: this station carries out only commands signed by the county".into())
            }
        };
    };
    if s.schema != SCHEMA {
        return Err(format!("signed command of schema {:?}", s.schema));
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let inner = b64
        .decode(&s.signed)
        .map_err(|e| format!("signed command not base64: {e}"))?;
    let Some(key) = key else {
        return Ok(Cow::Owned(inner));
    };
    let sig = b64
        .decode(&s.sig)
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
        .map(|b| Signature::from_bytes(&b))
        .ok_or("the signature is not 64 bytes of base64")?;
    key.verify_strict(&signed_bytes(topic, &inner), &sig)
        .map_err(|_| "the signature does not verify with the county's key".to_owned())?;
    Ok(Cow::Owned(inner))
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signer as _, SigningKey};

    use super::*;

    fn sign(key: &SigningKey, topic: &str, payload: &[u8]) -> Vec<u8> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let sig = key.sign(&signed_bytes(topic, payload));
        serde_json::to_vec(&Signed {
            schema: SCHEMA.into(),
            signed: b64.encode(payload),
            sig: b64.encode(sig.to_bytes()),
        })
        .unwrap_or_default()
    }

    #[test]
    fn only_what_the_county_signed_for_this_topic_is_opened() {
        let county = SigningKey::from_bytes(&[7; 32]);
        let thief = SigningKey::from_bytes(&[9; 32]);
        let public = county.verifying_key();
        let text = base64::engine::general_purpose::STANDARD.encode(public.to_bytes());
        assert_eq!(county_key(&text), Ok(public));
        assert!(county_key("AAAA").is_err());
        let topic = "pithead/v1/c/s1/cmd/notice";
        let cmd = br#"{"schema":"pithead/v1","msg_id":"n1"}"#;
        let good = sign(&county, topic, cmd);
        assert_eq!(open(Some(&public), topic, &good).as_deref(), Ok(&cmd[..]));
        // Unsigned, signed by another key, signed for another station,
        // tampered with: refused, each with its reason.
        assert!(open(Some(&public), topic, cmd).is_err_and(|e| e.starts_with("unsigned")));
        let forged = sign(&thief, topic, cmd);
        assert!(open(Some(&public), topic, &forged).is_err_and(|e| e.contains("does not verify")));
        assert!(open(Some(&public), "pithead/v1/c/s2/cmd/notice", &good).is_err());
        let tampered = String::from_utf8_lossy(&good).replace("eyJz", "eyJ6");
        assert!(open(Some(&public), topic, tampered.as_bytes()).is_err());
        // Without a key: as before, and a signed one is unwrapped.
        assert_eq!(open(None, topic, cmd).as_deref(), Ok(&cmd[..]));
        assert_eq!(open(None, topic, &good).as_deref(), Ok(&cmd[..]));
    }
}

//! JSON Web Tokens as the fakes check them: compact RS256 tokens
//! (RSASSA-PKCS1-v1_5 with SHA-256), their time claims, and the public-key
//! fingerprint Snowflake puts in a token's issuer. Also the test keys of
//! `tests/fixtures/keys` and a signer, for tests that make their own tokens.
//!
//! | fixture | what |
//! | --- | --- |
//! | [`SERVICE_KEY`] | 2048-bit RSA private key, PKCS#8 PEM: the service-account and Snowflake key |
//! | [`SERVICE_PUBLIC_KEY`] | its public half, SubjectPublicKeyInfo PEM |
//! | [`SERVICE_ENCRYPTED_KEY`] | the same private key, encrypted PKCS#8 ([`SERVICE_KEY_PASSPHRASE`]) |
//! | [`OTHER_KEY`], [`OTHER_PUBLIC_KEY`] | a second key pair, the "wrong key" |

use std::time::{SystemTime, UNIX_EPOCH};

use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use rsa::{
    RsaPrivateKey, RsaPublicKey,
    pkcs1::DecodeRsaPublicKey,
    pkcs1v15::{Signature, SigningKey, VerifyingKey},
    pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey},
    signature::{SignatureEncoding, Signer, Verifier},
};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The private test key (PKCS#8 PEM) by file name.
pub const SERVICE_KEY: &str = "service.pem";
/// The public half of [`SERVICE_KEY`] (SubjectPublicKeyInfo PEM).
pub const SERVICE_PUBLIC_KEY: &str = "service.pub.pem";
/// [`SERVICE_KEY`] encrypted (PKCS#8, PBES2 with AES-256-CBC).
pub const SERVICE_ENCRYPTED_KEY: &str = "service.encrypted.p8";
/// The passphrase of [`SERVICE_ENCRYPTED_KEY`].
pub const SERVICE_KEY_PASSPHRASE: &str = "flyte-test-passphrase";
/// A second private key, which no fake trusts.
pub const OTHER_KEY: &str = "other.pem";
/// The public half of [`OTHER_KEY`].
pub const OTHER_PUBLIC_KEY: &str = "other.pub.pem";

/// How far in the future a token's `iat` may lie (clock skew), in seconds.
pub const CLOCK_SKEW_SECS: i64 = 60;

/// The folder of the test keys.
pub const FIXTURE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/keys/");

/// The text of test key file `name` (one of the constants above).
pub fn fixture(name: &str) -> String {
    std::fs::read_to_string(fixture_path(name)).expect("read a test key")
}

/// The path of test key file `name`.
pub fn fixture_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(FIXTURE_DIR).join(name)
}

/// Reads a public key from PEM: SubjectPublicKeyInfo (`BEGIN PUBLIC KEY`)
/// or PKCS#1 (`BEGIN RSA PUBLIC KEY`).
pub fn parse_public_key(pem: &str) -> Result<RsaPublicKey, String> {
    RsaPublicKey::from_public_key_pem(pem.trim())
        .or_else(|_| RsaPublicKey::from_pkcs1_pem(pem.trim()))
        .map_err(|e| format!("not an RSA public key in PEM: {e}"))
}

/// Like [`parse_public_key`], for keys the test supplies.
pub fn public_key(pem: &str) -> RsaPublicKey {
    parse_public_key(pem).expect("a test public key")
}

/// The public key of test key file `name` (`service.pub.pem`, `other.pub.pem`).
pub fn fixture_public_key(name: &str) -> RsaPublicKey {
    public_key(&fixture(name))
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn decode_json(part: &str, what: &str) -> Result<Value, String> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| format!("{what} is not base64url"))?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| format!("{what} is not JSON"))?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(format!("{what} is not a JSON object"))
    }
}

/// Verifies a compact RS256 token with `key` and returns its header and
/// claims. The error is a short reason ("bad signature", "alg is HS256")
/// that never repeats the token.
pub fn verify_rs256(token: &str, key: &RsaPublicKey) -> Result<(Value, Value), String> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not a compact JWS (three dot-separated parts)".into());
    };
    let header_json = decode_json(header, "header")?;
    match header_json.get("alg") {
        Some(Value::String(alg)) if alg == "RS256" => {}
        Some(Value::String(alg)) => return Err(format!("alg is {alg}")),
        _ => return Err("alg is missing".into()),
    }
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| "signature is not base64url".to_owned())?;
    let signature =
        Signature::try_from(signature.as_slice()).map_err(|_| "bad signature".to_owned())?;
    let signed = &token[..header.len() + 1 + payload.len()];
    VerifyingKey::<Sha256>::new(key.clone())
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| "bad signature".to_owned())?;
    let claims = decode_json(payload, "payload")?;
    Ok((header_json, claims))
}

/// Checks `iat` and `exp`: both integers (seconds), `iat` not more than
/// [`CLOCK_SKEW_SECS`] ahead, `exp` in the future, and at most
/// `max_lifetime_secs` between them.
pub fn check_times(claims: &Value, max_lifetime_secs: u64) -> Result<(), String> {
    let iat = claims
        .get("iat")
        .and_then(Value::as_i64)
        .ok_or("iat is not an integer")?;
    let exp = claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or("exp is not an integer")?;
    let now = now_secs();
    if iat > now.saturating_add(CLOCK_SKEW_SECS) {
        return Err("iat is in the future".into());
    }
    if exp <= now {
        return Err("token expired".into());
    }
    let lifetime = exp.saturating_sub(iat);
    if lifetime > i64::try_from(max_lifetime_secs).unwrap_or(i64::MAX) {
        return Err(format!("lifetime {lifetime} s over {max_lifetime_secs} s"));
    }
    Ok(())
}

/// Standard base64 (padded) of the SHA-256 of the key's
/// SubjectPublicKeyInfo DER: the `SHA256:` fingerprint of Snowflake.
pub fn public_key_fingerprint(key: &RsaPublicKey) -> String {
    let der = key
        .to_public_key_der()
        .expect("an RSA public key encodes as DER");
    STANDARD.encode(Sha256::digest(der.as_bytes()))
}

/// Signs `claims` with `header` (to which `alg: RS256` is added) with the
/// PKCS#8 PEM private key `private_key_pem`: a token as a connector makes it.
pub fn sign_rs256(header: &Value, claims: &Value, private_key_pem: &str) -> String {
    let key = RsaPrivateKey::from_pkcs8_pem(private_key_pem.trim()).expect("a test private key");
    let mut header = header.clone();
    header["alg"] = Value::from("RS256");
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = SigningKey::<Sha256>::new(key).sign(signed.as_bytes());
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.to_vec()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// `{"alg":"RS256","typ":"JWT"}.{"sub":"flyte"}` signed with service.pem.
    const TOKEN: &str = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJmbHl0ZSJ9.kn_vBInTE3UYDE3lypOy_Zsl3Yby3I-vqwH2SrnWbGUjhRjUWPs2fd5EHFnRKpzeBS6CuVWyz1PaPMMgC__FXNfSQMiTpL-POuPIxDuHB28ITpM1_r-bStQM3naLMkJ-yQx9W8CSw9ej9XzIm_DXm66IIoBWSyaTuKkcWFVn2zAO3mxwmy3AxOQrkDM24W5JolemjlqWwfwR81zRcl0JvO3LWKz4wM1Ka09Qj8Um-xjb_XxAzt5NKNbuoM--4BBG-3wW2EasNqsgIz2tCdgwZ4gCGuDkD3C2HMEYPlezFaUVA6YOHdQ4WXTHxJvWZQH89BtCbdw3xGTNIcQhe77sbg";

    #[test]
    fn a_token_signed_with_the_service_key_verifies() {
        let (header, claims) =
            verify_rs256(TOKEN, &fixture_public_key(SERVICE_PUBLIC_KEY)).expect("verifies");
        assert_eq!(header, json!({"alg": "RS256", "typ": "JWT"}));
        assert_eq!(claims, json!({"sub": "flyte"}));
    }

    #[test]
    fn the_other_key_or_a_changed_payload_fails() {
        assert_eq!(
            verify_rs256(TOKEN, &fixture_public_key(OTHER_PUBLIC_KEY)),
            Err("bad signature".into())
        );
        // `{"sub":"flyte"}` → `{"sub":"flytf"}`: one byte of the payload.
        let changed = TOKEN.replace(".eyJzdWIiOiJmbHl0ZSJ9.", ".eyJzdWIiOiJmbHl0ZiJ9.");
        assert_ne!(changed, TOKEN);
        assert_eq!(
            verify_rs256(&changed, &fixture_public_key(SERVICE_PUBLIC_KEY)),
            Err("bad signature".into())
        );
    }

    #[test]
    fn other_algorithms_and_shapes_are_refused_with_a_short_reason() {
        let key = fixture_public_key(SERVICE_PUBLIC_KEY);
        let hs256 = format!(
            "{}.eyJzdWIiOiJmbHl0ZSJ9.c2ln",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#)
        );
        assert_eq!(verify_rs256(&hs256, &key), Err("alg is HS256".into()));
        let reason = verify_rs256("only.two", &key).expect_err("refused");
        assert!(reason.starts_with("not a compact JWS"), "{reason}");
        let reason = verify_rs256("!!.e30.c2ln", &key).expect_err("refused");
        assert_eq!(reason, "header is not base64url");
    }

    #[test]
    fn a_token_made_by_sign_rs256_verifies() {
        let claims = json!({"iss": "me", "iat": now_secs(), "exp": now_secs() + 60});
        let token = sign_rs256(&json!({"typ": "JWT"}), &claims, &fixture(SERVICE_KEY));
        let (header, verified) =
            verify_rs256(&token, &fixture_public_key(SERVICE_PUBLIC_KEY)).expect("verifies");
        assert_eq!(header["alg"], "RS256");
        assert_eq!(verified, claims);
        assert!(verify_rs256(&token, &fixture_public_key(OTHER_PUBLIC_KEY)).is_err());
    }

    #[test]
    fn times_are_checked() {
        let now = now_secs();
        assert_eq!(
            check_times(&json!({"iat": now, "exp": now + 3600}), 3600),
            Ok(())
        );
        assert_eq!(
            check_times(&json!({"iat": now - 7200, "exp": now - 3600}), 3600),
            Err("token expired".into())
        );
        assert_eq!(
            check_times(&json!({"iat": now + 600, "exp": now + 900}), 3600),
            Err("iat is in the future".into())
        );
        assert!(check_times(&json!({"iat": now, "exp": now + 3601}), 3600).is_err());
        assert!(check_times(&json!({"iat": "now", "exp": now + 60}), 3600).is_err());
        assert!(check_times(&json!({"iat": now}), 3600).is_err());
    }

    #[test]
    fn the_fingerprint_is_the_one_openssl_computes() {
        assert_eq!(
            public_key_fingerprint(&fixture_public_key(SERVICE_PUBLIC_KEY)),
            "557AGr+XSYN5/mKfTNSENSAutQ7atBd++12tNyUeXYA="
        );
    }
}

//! RS256 JSON Web Tokens, signed inside the sandbox (feature `jwt`).
//!
//! Services such as Google Cloud (service-account keys) and Snowflake
//! (key-pair authentication) accept a JWT signed with an RSA private key
//! instead of a password. This module reads the key from PEM — PKCS#8,
//! passphrase-encrypted PKCS#8 (PBES2: PBKDF2 or scrypt with AES-CBC) or
//! PKCS#1 — and signs tokens with RSASSA-PKCS1-v1_5 and SHA-256, in pure
//! Rust, so no native library or key file is needed on the host.
//!
//! ```
//! # use flyte_connector_sdk::jwt::{Header, SigningKey, unix_now};
//! # fn sign(pem: &str) -> Result<String, flyte_connector_sdk::Error> {
//! let key = SigningKey::from_pem(pem, None)?;
//! let now = unix_now();
//! let claims = serde_json::json!({"iss": "me", "iat": now, "exp": now + 3600});
//! let token = key.sign(&Header::new().key_id("key-1"), &claims)?;
//! # Ok(token)
//! # }
//! ```
//!
//! Keys never appear in messages or `Debug` output: a [`SigningKey`] shows
//! only its public fingerprint.

use std::{
    fmt,
    time::{SystemTime, UNIX_EPOCH},
};

use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use rsa::{
    RsaPrivateKey,
    pkcs1::DecodeRsaPrivateKey,
    pkcs1v15,
    pkcs8::{DecodePrivateKey, EncodePublicKey},
    signature::{RandomizedSigner, SignatureEncoding},
};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::Error;

/// An RSA private key that signs RS256 JWTs.
pub struct SigningKey {
    key: pkcs1v15::SigningKey<Sha256>,
    fingerprint: String,
}

impl SigningKey {
    /// Reads a PEM private key: `PRIVATE KEY` (PKCS#8), `ENCRYPTED PRIVATE
    /// KEY` (PKCS#8 encrypted with `passphrase`) or `RSA PRIVATE KEY`
    /// (PKCS#1). A passphrase given for a key that is not encrypted is
    /// ignored.
    ///
    /// The error says what is wrong with the key ([`Error::InvalidRequest`])
    /// without showing any of it; callers add which secret held it.
    pub fn from_pem(pem: &str, passphrase: Option<&str>) -> Result<Self, Error> {
        let pem = pem.trim();
        let label = pem
            .lines()
            .next()
            .and_then(|line| line.strip_prefix("-----BEGIN "))
            .and_then(|line| line.strip_suffix("-----"))
            .ok_or_else(|| Error::invalid_request("the key is not in PEM format"))?;
        let key = match label {
            "PRIVATE KEY" => RsaPrivateKey::from_pkcs8_pem(pem)
                .map_err(|err| key_error("the PKCS#8 key cannot be read", err))?,
            "ENCRYPTED PRIVATE KEY" => {
                let passphrase = passphrase.filter(|p| !p.is_empty()).ok_or_else(|| {
                    Error::invalid_request("the key is encrypted and no passphrase was given")
                })?;
                RsaPrivateKey::from_pkcs8_encrypted_pem(pem, passphrase).map_err(|err| {
                    key_error(
                        "the encrypted key cannot be decrypted (is the passphrase right?)",
                        err,
                    )
                })?
            }
            "RSA PRIVATE KEY" => RsaPrivateKey::from_pkcs1_pem(pem)
                .map_err(|err| key_error("the PKCS#1 key cannot be read", err))?,
            other => {
                return Err(Error::invalid_request(format!(
                    "a PEM \"{other}\" is not an RSA private key"
                )));
            }
        };
        let public_der = key
            .to_public_key()
            .to_public_key_der()
            .map_err(|err| key_error("the key's public half cannot be encoded", err))?;
        let fingerprint = STANDARD.encode(Sha256::digest(public_der.as_bytes()));
        Ok(Self {
            key: pkcs1v15::SigningKey::new(key),
            fingerprint,
        })
    }

    /// Base64 (standard, padded) of the SHA-256 digest of the public key's
    /// DER `SubjectPublicKeyInfo`: what Snowflake's `RSA_PUBLIC_KEY_FP`
    /// shows after `SHA256:`.
    pub fn public_key_fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// A compact JWS: `base64url(header).base64url(claims).base64url(signature)`,
    /// signed with RS256 (blinded, so the signing time does not depend on
    /// the key).
    pub fn sign<C: Serialize + ?Sized>(
        &self,
        header: &Header,
        claims: &C,
    ) -> Result<String, Error> {
        let header = serde_json::to_vec(header)?;
        let claims = serde_json::to_vec(claims)?;
        let mut token = URL_SAFE_NO_PAD.encode(header);
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(claims));
        let signature = self
            .key
            .try_sign_with_rng(&mut rand_core::OsRng, token.as_bytes())
            .map_err(|err| Error::failed(format!("cannot sign the token: {err}")))?;
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature.to_bytes()));
        Ok(token)
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("public_key_fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// A key error, with the parser's reason (which never contains key bytes).
fn key_error(what: &str, err: impl fmt::Display) -> Error {
    Error::invalid_request(format!("{what}: {err}"))
}

/// A JWT header: `{"alg": "RS256", "typ": "JWT"}`, and `kid` when set.
#[derive(Debug, Clone, Serialize)]
pub struct Header {
    alg: &'static str,
    typ: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
}

impl Header {
    /// The RS256 header with no key id.
    pub fn new() -> Self {
        Self {
            alg: "RS256",
            typ: "JWT",
            kid: None,
        }
    }

    /// Names the signing key (`kid`), as Google's service-account keys ask.
    pub fn key_id(mut self, kid: impl Into<String>) -> Self {
        self.kid = Some(kid.into());
        self
    }
}

impl Default for Header {
    fn default() -> Self {
        Self::new()
    }
}

/// Seconds since the Unix epoch, for `iat` and `exp` claims.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEM: &str = include_str!("../../tests/fixtures/keys/service.pem");
    const ENCRYPTED: &str = include_str!("../../tests/fixtures/keys/service.encrypted.p8");
    const PASSPHRASE: &str = "flyte-test-passphrase";

    /// `openssl pkey -pubin -in service.pub.pem -outform DER | openssl dgst
    /// -sha256 -binary | base64`
    const FINGERPRINT: &str = "557AGr+XSYN5/mKfTNSENSAutQ7atBd++12tNyUeXYA=";

    /// `{"alg":"RS256","typ":"JWT"}.{"sub":"flyte"}`, signed by `openssl
    /// dgst -sha256 -sign service.pem` (PKCS#1 v1.5 is deterministic, so
    /// ours must match byte for byte).
    const SIGNED: &str = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJmbHl0ZSJ9.kn_vBInTE3UYDE3lypOy_Zsl3Yby3I-vqwH2SrnWbGUjhRjUWPs2fd5EHFnRKpzeBS6CuVWyz1PaPMMgC__FXNfSQMiTpL-POuPIxDuHB28ITpM1_r-bStQM3naLMkJ-yQx9W8CSw9ej9XzIm_DXm66IIoBWSyaTuKkcWFVn2zAO3mxwmy3AxOQrkDM24W5JolemjlqWwfwR81zRcl0JvO3LWKz4wM1Ka09Qj8Um-xjb_XxAzt5NKNbuoM--4BBG-3wW2EasNqsgIz2tCdgwZ4gCGuDkD3C2HMEYPlezFaUVA6YOHdQ4WXTHxJvWZQH89BtCbdw3xGTNIcQhe77sbg";

    #[test]
    fn signatures_match_openssl() {
        let key = SigningKey::from_pem(PEM, None).expect("key");
        let token = key
            .sign(&Header::new(), &serde_json::json!({"sub": "flyte"}))
            .expect("sign");
        assert_eq!(token, SIGNED);
    }

    #[test]
    fn the_fingerprint_matches_openssl() {
        let key = SigningKey::from_pem(PEM, None).expect("key");
        assert_eq!(key.public_key_fingerprint(), FINGERPRINT);
        assert!(format!("{key:?}").contains(FINGERPRINT));
        assert!(!format!("{key:?}").contains("MII"));
    }

    #[test]
    fn an_encrypted_key_needs_its_passphrase() {
        let key = SigningKey::from_pem(ENCRYPTED, Some(PASSPHRASE)).expect("decrypt");
        assert_eq!(key.public_key_fingerprint(), FINGERPRINT);
        let missing = SigningKey::from_pem(ENCRYPTED, None).expect_err("no passphrase");
        assert!(missing.message().contains("no passphrase"), "{missing}");
        let wrong = SigningKey::from_pem(ENCRYPTED, Some("nope")).expect_err("wrong passphrase");
        assert!(wrong.message().contains("passphrase"), "{wrong}");
    }

    #[test]
    fn bad_keys_are_named_without_their_content() {
        for (pem, expected) in [
            ("not a key", "not in PEM format"),
            (
                "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
                "CERTIFICATE",
            ),
            (
                "-----BEGIN PRIVATE KEY-----\nMIIBsecretbytes\n-----END PRIVATE KEY-----",
                "cannot be read",
            ),
        ] {
            let err = SigningKey::from_pem(pem, None).expect_err(pem);
            assert!(err.message().contains(expected), "{err}");
            assert!(!err.message().contains("secretbytes"), "{err}");
        }
    }

    #[test]
    fn headers_carry_the_key_id_when_set() {
        let header = serde_json::to_string(&Header::new().key_id("k1")).expect("json");
        assert_eq!(header, r#"{"alg":"RS256","typ":"JWT","kid":"k1"}"#);
        let header = serde_json::to_string(&Header::new()).expect("json");
        assert_eq!(header, r#"{"alg":"RS256","typ":"JWT"}"#);
    }
}

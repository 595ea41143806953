//! Key-pair authentication: a JWT signed inside the sandbox with the
//! connection's private key, as Snowflake's SQL API takes it.

use flyte_connector_sdk::{
    Connection, Error,
    cache::{self, Expiring},
    jwt::{Header, SigningKey, unix_now},
};
use serde_json::json;

/// The connection secret holding the PEM private key.
pub const PRIVATE_KEY_SECRET: &str = "snowflake_private_key";

/// The connection secret holding the key's passphrase, when it is encrypted.
pub const PASSPHRASE_SECRET: &str = "snowflake_private_key_passphrase";

/// How long a token is valid: Snowflake takes at most an hour; a minute
/// less leaves room for clock skew.
const LIFETIME_SECS: u64 = 59 * 60;

/// The account identifier as JWT claims name it: upper case, without the
/// region and cloud a locator may carry (`xy12345.us-east-2.aws` →
/// `XY12345`).
pub fn claim_account(account: &str) -> String {
    account
        .split('.')
        .next()
        .unwrap_or(account)
        .to_ascii_uppercase()
}

/// A key-pair JWT for `user` in `account`: `iss` is
/// `ACCOUNT.USER.SHA256:<public key fingerprint>`, `sub` is `ACCOUNT.USER`.
///
/// Signed once per token lifetime when the instance serves several calls
/// (see [`flyte_connector_sdk::cache`]).
pub fn key_pair_jwt(connection: &Connection, account: &str, user: &str) -> Result<String, Error> {
    let pem = connection.get(PRIVATE_KEY_SECRET).unwrap_or_default();
    let passphrase = connection.get(PASSPHRASE_SECRET).unwrap_or_default();
    let now = unix_now();
    cache::get_or_try_insert(
        &cache::key("snowflake-key-pair-jwt", &[pem, passphrase, account, user]),
        now,
        || {
            let token = sign_jwt(connection, account, user, now)?;
            Ok(Expiring::expires_at(token, now + LIFETIME_SECS))
        },
    )
}

/// Signs a new key-pair JWT, issued at `now`.
fn sign_jwt(connection: &Connection, account: &str, user: &str, now: u64) -> Result<String, Error> {
    let pem = connection
        .get(PRIVATE_KEY_SECRET)
        .filter(|pem| !pem.trim().is_empty())
        .ok_or_else(|| {
            Error::invalid_request(format!(
                "the connection has no secret `{PRIVATE_KEY_SECRET}`: this connector \
                 authenticates to Snowflake with key-pair JWTs only"
            ))
        })?;
    let passphrase = connection.get(PASSPHRASE_SECRET);
    let key = SigningKey::from_pem(pem, passphrase).map_err(|err| {
        Error::invalid_request(format!(
            "the connection secret `{PRIVATE_KEY_SECRET}` for user {user}: {}",
            err.message()
        ))
    })?;
    let subject = format!("{}.{}", claim_account(account), user.to_ascii_uppercase());
    let claims = json!({
        "iss": format!("{subject}.SHA256:{}", key.public_key_fingerprint()),
        "sub": subject,
        "iat": now,
        "exp": now + LIFETIME_SECS,
    });
    key.sign(&Header::new(), &claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEM: &str = include_str!("../../../tests/fixtures/keys/service.pem");
    const ENCRYPTED: &str = include_str!("../../../tests/fixtures/keys/service.encrypted.p8");
    const FINGERPRINT: &str = "557AGr+XSYN5/mKfTNSENSAutQ7atBd++12tNyUeXYA=";

    fn claims(token: &str) -> serde_json::Value {
        use base64::Engine as _;
        let part = token.split('.').nth(1).expect("claims part");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .expect("base64url");
        serde_json::from_slice(&bytes).expect("json")
    }

    #[test]
    fn accounts_are_normalised_as_snowflake_documents() {
        assert_eq!(claim_account("xy12345.us-east-2.aws"), "XY12345");
        assert_eq!(claim_account("myorg-analytics"), "MYORG-ANALYTICS");
    }

    #[test]
    fn the_jwt_names_the_account_user_and_key() {
        let connection: Connection = [(PRIVATE_KEY_SECRET, PEM)].into_iter().collect();
        let token = key_pair_jwt(&connection, "xy12345.us-east-2.aws", "flyte").expect("jwt");
        let claims = claims(&token);
        assert_eq!(claims["sub"], "XY12345.FLYTE");
        assert_eq!(claims["iss"], format!("XY12345.FLYTE.SHA256:{FINGERPRINT}"));
        let lifetime = claims["exp"].as_u64().expect("exp") - claims["iat"].as_u64().expect("iat");
        assert!(lifetime <= 3600);
    }

    #[test]
    fn an_encrypted_key_is_read_with_its_passphrase() {
        let connection: Connection = [
            (PRIVATE_KEY_SECRET, ENCRYPTED),
            (PASSPHRASE_SECRET, "flyte-test-passphrase"),
        ]
        .into_iter()
        .collect();
        let token = key_pair_jwt(&connection, "myorg-analytics", "flyte").expect("jwt");
        assert!(
            claims(&token)["iss"]
                .as_str()
                .expect("iss")
                .ends_with(FINGERPRINT)
        );

        let wrong: Connection = [
            (PRIVATE_KEY_SECRET, ENCRYPTED),
            (PASSPHRASE_SECRET, "guess-xyzzy"),
        ]
        .into_iter()
        .collect();
        let err = key_pair_jwt(&wrong, "myorg-analytics", "flyte").expect_err("wrong passphrase");
        assert!(err.message().contains("passphrase"), "{err}");
        assert!(!err.message().contains("xyzzy"), "{err}");
    }

    #[test]
    fn no_key_says_which_secret_is_missing() {
        let err = key_pair_jwt(&Connection::new(), "a", "u").expect_err("no key");
        assert!(err.message().contains(PRIVATE_KEY_SECRET), "{err}");
    }
}

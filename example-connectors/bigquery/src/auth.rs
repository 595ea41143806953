//! Google credentials: a service-account key signed into a self-signed JWT
//! in the sandbox, or a token from the GCE/GKE metadata server.

use flyte_connector_sdk::{
    Connection, Error,
    cache::{self, Expiring},
    http,
    jwt::{Header, SigningKey, unix_now},
};
use serde::Deserialize;
use serde_json::json;

/// The connection secret holding a service-account key (JSON).
pub const CREDENTIALS_SECRET: &str = "google_application_credentials";

/// Environment variable naming the metadata server (`host[:port]`).
pub const METADATA_HOST_ENV: &str = "GCE_METADATA_HOST";

/// The metadata server's name inside Google Cloud.
const DEFAULT_METADATA_HOST: &str = "metadata.google.internal";

/// The audience of a self-signed JWT for BigQuery: the service's name,
/// whichever endpoint the request goes to.
const AUDIENCE: &str = "https://bigquery.googleapis.com/";

/// How long a self-signed token is valid (Google's maximum).
const LIFETIME_SECS: u64 = 3600;

/// The fields of a service-account key file this connector uses.
#[derive(Deserialize)]
struct ServiceAccountKey {
    #[serde(rename = "type")]
    kind: Option<String>,
    client_email: String,
    private_key: String,
    private_key_id: String,
}

/// Who the connector acts as, for messages: never a secret.
#[derive(Debug)]
pub enum Identity {
    /// A service account, by its email.
    ServiceAccount(String),
    /// The workload's own identity, from the metadata server.
    Workload,
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ServiceAccount(email) => write!(f, "service account {email}"),
            Self::Workload => f.write_str("the workload's identity from the metadata server"),
        }
    }
}

/// A bearer token for BigQuery and whose it is.
pub struct Bearer {
    /// The token, for the `Authorization` header only.
    pub token: String,
    /// Whose token it is.
    pub identity: Identity,
}

/// The bearer token for this call: a self-signed JWT from the connection's
/// service-account key, else the metadata server's token.
pub fn bearer(connection: &Connection) -> Result<Bearer, Error> {
    match connection
        .get(CREDENTIALS_SECRET)
        .filter(|v| !v.trim().is_empty())
    {
        Some(key) => self_signed_jwt(key),
        None => metadata_server_token(),
    }
}

/// A JWT signed with the service account's key, sent as the bearer itself
/// (Google's "service account authorization without OAuth"): no token
/// exchange, so no extra round trip per call. Signed once per token
/// lifetime when the instance serves several calls (see
/// [`flyte_connector_sdk::cache`]).
fn self_signed_jwt(key_json: &str) -> Result<Bearer, Error> {
    let now = unix_now();
    let (token, email) = cache::get_or_try_insert(
        &cache::key("bigquery-self-signed-jwt", &[key_json]),
        now,
        || {
            let bearer = sign_jwt(key_json, now)?;
            let Identity::ServiceAccount(email) = bearer.identity else {
                return Err(Error::failed("a self-signed token without its account"));
            };
            Ok(Expiring::expires_at(
                (bearer.token, email),
                now + LIFETIME_SECS,
            ))
        },
    )?;
    Ok(Bearer {
        token,
        identity: Identity::ServiceAccount(email),
    })
}

/// Signs a new self-signed JWT, issued at `now`.
fn sign_jwt(key_json: &str, now: u64) -> Result<Bearer, Error> {
    let key: ServiceAccountKey = serde_json::from_str(key_json).map_err(|err| {
        // serde's message names fields and positions, never values.
        Error::invalid_request(format!(
            "the connection secret `{CREDENTIALS_SECRET}` is not a service-account key: {err}"
        ))
    })?;
    if let Some(kind) = key
        .kind
        .as_deref()
        .filter(|kind| *kind != "service_account")
    {
        return Err(Error::invalid_request(format!(
            "the connection secret `{CREDENTIALS_SECRET}` holds a `{kind}` credential; \
             only service-account keys are supported"
        )));
    }
    let signing_key = SigningKey::from_pem(&key.private_key, None).map_err(|err| {
        Error::invalid_request(format!(
            "the private_key of `{CREDENTIALS_SECRET}` ({}): {}",
            key.client_email,
            err.message()
        ))
    })?;
    let claims = json!({
        "iss": key.client_email,
        "sub": key.client_email,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + LIFETIME_SECS,
    });
    let token = signing_key.sign(&Header::new().key_id(key.private_key_id), &claims)?;
    Ok(Bearer {
        token,
        identity: Identity::ServiceAccount(key.client_email),
    })
}

/// Shows whose token it is, never the token.
impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bearer")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct MetadataToken {
    access_token: String,
    /// Seconds the token stays valid.
    #[serde(default)]
    expires_in: u64,
}

/// The default service account's token from the metadata server
/// (workload identity on GKE, the VM's account on GCE), fetched again
/// [`cache::REFRESH_MARGIN_SECS`] before it expires when the instance serves
/// several calls.
fn metadata_server_token() -> Result<Bearer, Error> {
    let now = unix_now();
    let token = cache::get_or_try_insert(&cache::key("bigquery-metadata-token", &[]), now, || {
        let token = fetch_metadata_token()?;
        Ok(Expiring::expires_at(
            token.access_token,
            now + token.expires_in,
        ))
    })?;
    Ok(Bearer {
        token,
        identity: Identity::Workload,
    })
}

fn fetch_metadata_token() -> Result<MetadataToken, Error> {
    let host = std::env::var(METADATA_HOST_ENV)
        .ok()
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| DEFAULT_METADATA_HOST.to_owned());
    let url = format!("http://{host}/computeMetadata/v1/instance/service-accounts/default/token");
    let response = http::get(url)
        .header("Metadata-Flavor", "Google")
        .send()
        .map_err(|err| {
            let hint = format!(
                "no connection secret `{CREDENTIALS_SECRET}`, and no token from the metadata \
                 server {host}"
            );
            match Error::from(err) {
                Error::Retryable(message) => Error::retryable(format!("{hint}: {message}")),
                other => Error::failed(format!("{hint}: {}", other.message())),
            }
        })?
        .error_for_status()?;
    response.json()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEM: &str = include_str!("../../../tests/fixtures/keys/service.pem");

    fn key_json(kind: &str, private_key: &str) -> String {
        json!({
            "type": kind,
            "client_email": "flyte@project.iam.gserviceaccount.com",
            "private_key": private_key,
            "private_key_id": "key-1",
        })
        .to_string()
    }

    fn decode_part(part: &str) -> serde_json::Value {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .expect("base64url");
        serde_json::from_slice(&bytes).expect("json")
    }

    #[test]
    fn a_service_account_key_signs_a_jwt_for_bigquery() {
        let bearer = self_signed_jwt(&key_json("service_account", PEM)).expect("jwt");
        let parts: Vec<&str> = bearer.token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header = decode_part(parts[0]);
        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["kid"], "key-1");
        let claims = decode_part(parts[1]);
        assert_eq!(claims["iss"], "flyte@project.iam.gserviceaccount.com");
        assert_eq!(claims["sub"], claims["iss"]);
        assert_eq!(claims["aud"], AUDIENCE);
        let lifetime = claims["exp"].as_u64().expect("exp") - claims["iat"].as_u64().expect("iat");
        assert_eq!(lifetime, LIFETIME_SECS);
        assert_eq!(
            bearer.identity.to_string(),
            "service account flyte@project.iam.gserviceaccount.com"
        );
    }

    #[test]
    fn other_credentials_are_refused_without_showing_them() {
        let err = self_signed_jwt(&key_json("authorized_user", PEM)).expect_err("user creds");
        assert!(err.message().contains("authorized_user"), "{err}");
        let err = self_signed_jwt(&key_json(
            "service_account",
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----",
        ))
        .expect_err("bad key");
        assert!(err.message().contains("flyte@project"), "{err}");
        assert!(!err.message().contains("c2VjcmV0"), "{err}");
        let err = self_signed_jwt("{\"private_key\": \"hunter2\"").expect_err("not json");
        assert!(!err.message().contains("hunter2"), "{err}");
    }
}

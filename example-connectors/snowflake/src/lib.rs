//! Snowflake connector: runs the tasks of `flyteplugins-snowflake` through
//! Snowflake's SQL API v2, a drop-in for the Python connector of the same
//! name.
//!
//! - `create` submits the statement asynchronously
//!   (`POST /api/v2/statements?async=true`), its pyformat placeholders
//!   turned into typed bind variables; the statement handle is the query id.
//! - `get` polls it (`GET /api/v2/statements/HANDLE`): 202 running, 200
//!   done, 422 failed.
//! - `delete` cancels it (`POST /api/v2/statements/HANDLE/cancel`).
//!
//! Authentication is key-pair: a JWT signed in the sandbox with the
//! connection secret `snowflake_private_key`. The resource meta is the
//! Python connector's, byte for byte.

mod auth;
mod statement;

use flyte_connector_sdk::{http, prelude::*};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

pub use auth::{PASSPHRASE_SECRET, PRIVATE_KEY_SECRET};

/// Environment variable overriding the API endpoint (private link, tests).
pub const ENDPOINT_ENV: &str = "SNOWFLAKE_ENDPOINT";

/// The User-Agent the SQL API asks clients to send.
const USER_AGENT: &str = concat!("flyte-connect-snowflake/", env!("CARGO_PKG_VERSION"));

/// The Snowflake connector.
pub struct Snowflake;

/// What `create` stores: the Python connector's `SnowflakeJobMetadata`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnowflakeMeta {
    /// The account identifier, as the task names it.
    pub account: String,
    /// The user the statement runs as.
    pub user: String,
    /// The statement's database.
    pub database: String,
    /// The statement's schema.
    pub schema: String,
    /// The statement's warehouse.
    pub warehouse: String,
    /// The statement handle (Snowflake's query id).
    pub query_id: String,
    /// Whether the task's interface declares outputs.
    pub has_output: bool,
    /// The task's `connection_kwargs` (`role` is honoured).
    #[serde(default)]
    pub connection_kwargs: Option<Map<String, Value>>,
}

/// The parts of the template's `custom` this connector reads (what
/// `Snowflake.custom_config` writes).
#[derive(Debug, Default, Deserialize)]
struct Custom {
    account: Option<String>,
    user: Option<String>,
    database: Option<String>,
    schema: Option<String>,
    warehouse: Option<String>,
    #[serde(default)]
    batch: bool,
    connection_kwargs: Option<Map<String, Value>>,
}

/// A non-empty value, or `None`.
fn present(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

impl SnowflakeMeta {
    /// The SQL API's base URL: `SNOWFLAKE_ENDPOINT`, else the account's
    /// own host (underscores become hyphens, as in Snowflake's URLs).
    fn endpoint(&self) -> String {
        match std::env::var(ENDPOINT_ENV).ok().filter(|e| !e.is_empty()) {
            Some(endpoint) => endpoint.trim_end_matches('/').to_owned(),
            None => format!(
                "https://{}.snowflakecomputing.com",
                self.account.to_ascii_lowercase().replace('_', "-")
            ),
        }
    }

    /// The `role` of `connection_kwargs`, if any.
    fn role(&self) -> Option<&str> {
        self.connection_kwargs.as_ref()?.get("role")?.as_str()
    }

    /// The query in Snowsight, as the Python connector links it.
    fn dashboard_link(&self) -> TaskLog {
        let base = match self.account.split_once('-') {
            Some((org, account)) => format!("https://app.snowflake.com/{org}/{account}"),
            None => format!("https://app.snowflake.com/{}", self.account),
        };
        TaskLog::new(
            "Snowflake Dashboard",
            format!("{base}/#/compute/history/queries/{}/detail", self.query_id),
        )
        .link_type(LinkType::Dashboard)
    }

    /// Where the query's results are, as the Python connector names them.
    fn results_uri(&self) -> String {
        format!(
            "snowflake://{}/{}/{}/{}/{}/{}",
            self.user, self.account, self.warehouse, self.database, self.schema, self.query_id
        )
    }

    /// Sends `request` with a fresh key-pair JWT, turning a refused key into
    /// a failure naming the account and user (never the key). Other statuses
    /// are the caller's to judge.
    fn send(
        &self,
        request: http::Request,
        connection: &Connection,
        what: &str,
    ) -> Result<http::Response, Error> {
        let jwt = auth::key_pair_jwt(connection, &self.account, &self.user)?;
        let response = request
            .bearer_auth(&jwt)
            .header("X-Snowflake-Authorization-Token-Type", "KEYPAIR_JWT")
            .header("Accept", "application/json")
            .header("User-Agent", USER_AGENT)
            .send()?;
        match response.status() {
            401 | 403 => Err(Error::failed(format!(
                "Snowflake account {} refused the key-pair JWT of user {} (HTTP {}: {}) while \
                 trying to {what}: check the connection secret `{PRIVATE_KEY_SECRET}` and the \
                 public key registered for the user",
                self.account,
                self.user,
                response.status(),
                snowflake_message(&response)
            ))),
            _ => Ok(response),
        }
    }

    /// `{endpoint}/api/v2/statements/HANDLE{suffix}`.
    fn statement_url(&self, suffix: &str) -> String {
        format!(
            "{}/api/v2/statements/{}{suffix}",
            self.endpoint(),
            http::encode_component(&self.query_id)
        )
    }
}

/// The answer's `message`, or a note that it had none.
fn snowflake_message(response: &http::Response) -> String {
    response
        .json::<Value>()
        .ok()
        .and_then(|body| body.get("message")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| "no message".to_owned())
}

#[derive(Deserialize)]
struct Submitted {
    #[serde(rename = "statementHandle")]
    statement_handle: String,
}

/// A failed statement's answer (HTTP 422).
#[derive(Default, Deserialize)]
struct Failure {
    #[serde(default)]
    code: String,
    #[serde(default, rename = "sqlState")]
    sql_state: String,
    #[serde(default)]
    message: String,
}

impl Connector for Snowflake {
    type Meta = SnowflakeMeta;

    fn metadata() -> Metadata {
        Metadata::new("Snowflake Connector").task_type("snowflake")
    }

    fn create(task: TaskRequest) -> Result<SnowflakeMeta, Error> {
        let custom: Custom = task.custom::<Option<Custom>>()?.unwrap_or_default();
        let account = present(custom.account).ok_or_else(|| {
            Error::invalid_request("Missing Snowflake account. Set it through task configuration.")
        })?;
        let (Some(user), Some(database), Some(warehouse)) = (
            present(custom.user),
            present(custom.database),
            present(custom.warehouse),
        ) else {
            return Err(Error::invalid_request(
                "User, database and warehouse must be specified in the task configuration.",
            ));
        };
        let template = task
            .sql()
            .filter(|sql| !sql.trim().is_empty())
            .ok_or_else(|| {
                Error::invalid_request("the task has no SQL statement (sql.statement)")
            })?;
        let empty = Map::new();
        let inputs = task.inputs_json().as_object().unwrap_or(&empty);
        let statement = statement::prepare(template, inputs, task.input_types(), custom.batch)?;

        let mut meta = SnowflakeMeta {
            account,
            user,
            database,
            schema: present(custom.schema).unwrap_or_else(|| "PUBLIC".to_owned()),
            warehouse,
            query_id: String::new(),
            has_output: !task.output_types().is_empty(),
            connection_kwargs: Some(custom.connection_kwargs.unwrap_or_default()),
        };
        let mut body = json!({
            "statement": statement.sql,
            "database": meta.database,
            "schema": meta.schema,
            "warehouse": meta.warehouse,
        });
        if let Some(role) = meta.role() {
            body["role"] = json!(role);
        }
        if !statement.bindings.is_empty() {
            body["bindings"] = Value::Object(statement.bindings);
        }
        let url = format!("{}/api/v2/statements?async=true", meta.endpoint());
        let request = http::post(url).json(&body)?;
        let submitted: Submitted = meta
            .send(request, task.connection(), "submit the statement")?
            .error_for_status()?
            .json()?;
        meta.query_id = submitted.statement_handle;
        eprintln!(
            "submitted Snowflake statement {} to account {}",
            meta.query_id, meta.account
        );
        Ok(meta)
    }

    fn get(meta: SnowflakeMeta, ctx: &Context) -> Result<Resource, Error> {
        let request = http::get(meta.statement_url(""));
        let response = meta.send(request, ctx.connection(), "poll the statement")?;
        let link = meta.dashboard_link();
        match response.status() {
            202 => Ok(Resource::running().message("RUNNING").log_link(link)),
            200 => {
                let mut resource = Resource::succeeded().message("SUCCESS").log_link(link);
                if meta.has_output {
                    let mut outputs = Outputs::new();
                    outputs.insert_output("results", Output::dataframe(meta.results_uri(), ""));
                    resource = resource.outputs(outputs);
                }
                Ok(resource)
            }
            404 | 422 => {
                let failure: Failure = response.json().unwrap_or_default();
                Ok(Resource::failed(format!(
                    "{} ({}): {}: {}",
                    failure.code, failure.sql_state, meta.query_id, failure.message
                ))
                .log_link(link))
            }
            _ => {
                response.error_for_status()?;
                Err(Error::failed(format!(
                    "unexpected answer polling Snowflake statement {}",
                    meta.query_id
                )))
            }
        }
    }

    fn delete(meta: SnowflakeMeta, ctx: &Context) -> Result<(), Error> {
        let request = http::post(meta.statement_url("/cancel")).body(Vec::new());
        let response = meta.send(request, ctx.connection(), "cancel the statement")?;
        if matches!(response.status(), 404 | 422) {
            // Finished, failed or gone: nothing left to cancel.
            eprintln!(
                "Snowflake statement {} is no longer running; nothing to cancel",
                meta.query_id
            );
            return Ok(());
        }
        response.error_for_status()?;
        Ok(())
    }
}

flyte_connector_sdk::export_connector!(Snowflake);

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(account: &str) -> SnowflakeMeta {
        SnowflakeMeta {
            account: account.into(),
            user: "flyte".into(),
            database: "DB".into(),
            schema: "PUBLIC".into(),
            warehouse: "WH".into(),
            query_id: "01b2c3d4-0000-4e5f-0000-000000000001".into(),
            has_output: true,
            connection_kwargs: Some(Map::new()),
        }
    }

    #[test]
    fn the_meta_is_the_python_connectors_byte_for_byte() {
        let mut m = meta("myorg-analytics");
        m.connection_kwargs = Some(json!({"role": "LOADER"}).as_object().cloned().expect("map"));
        let bytes = flyte_connector_sdk::__private::encode_meta(&m).expect("encode");
        assert_eq!(
            String::from_utf8(bytes).expect("utf-8"),
            r#"{"account": "myorg-analytics", "user": "flyte", "database": "DB", "schema": "PUBLIC", "warehouse": "WH", "query_id": "01b2c3d4-0000-4e5f-0000-000000000001", "has_output": true, "connection_kwargs": {"role": "LOADER"}}"#
        );
        assert_eq!(m.role(), Some("LOADER"));
    }

    #[test]
    fn a_meta_without_connection_kwargs_reads() {
        let m: SnowflakeMeta = flyte_connector_sdk::__private::decode_meta(
            br#"{"account": "a", "user": "u", "database": "d", "schema": "s", "warehouse": "w", "query_id": "q", "has_output": false}"#,
        )
        .expect("decode");
        assert_eq!(m.connection_kwargs, None);
        assert_eq!(m.role(), None);
    }

    #[test]
    fn links_and_uris_are_the_python_connectors() {
        assert_eq!(
            meta("myorg-analytics").dashboard_link().uri,
            "https://app.snowflake.com/myorg/analytics/#/compute/history/queries/01b2c3d4-0000-4e5f-0000-000000000001/detail"
        );
        assert_eq!(
            meta("xy12345").dashboard_link().uri,
            "https://app.snowflake.com/xy12345/#/compute/history/queries/01b2c3d4-0000-4e5f-0000-000000000001/detail"
        );
        assert_eq!(
            meta("xy12345").results_uri(),
            "snowflake://flyte/xy12345/WH/DB/PUBLIC/01b2c3d4-0000-4e5f-0000-000000000001"
        );
    }

    #[test]
    fn the_default_endpoint_is_the_accounts_host() {
        assert_eq!(
            meta("MyOrg-my_account").endpoint(),
            "https://myorg-my-account.snowflakecomputing.com"
        );
    }
}

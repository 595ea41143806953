//! BigQuery connector: runs the tasks of `flyteplugins-bigquery` as
//! BigQuery query jobs through the REST API v2, a drop-in for the Python
//! connector of the same name.
//!
//! - `create` inserts a query job (`POST /bigquery/v2/projects/P/jobs`)
//!   with a job id it generates and the task's inputs as named query
//!   parameters.
//! - `get` polls it (`GET .../jobs/ID?location=L`): PENDING, RUNNING, DONE,
//!   and on success the result table as the `results` DataFrame.
//! - `delete` cancels it (`POST .../jobs/ID/cancel?location=L`).
//!
//! Credentials: the connection secret `google_application_credentials` (a
//! service-account key), signed into a JWT inside the sandbox, else the
//! metadata server's token. The resource meta is the Python connector's,
//! byte for byte.

mod auth;
mod params;

use flyte_connector_sdk::{
    http::{self, encode_component as encode},
    prelude::*,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub use auth::{CREDENTIALS_SECRET, METADATA_HOST_ENV};

/// Environment variable overriding the API endpoint (private endpoints, tests).
pub const ENDPOINT_ENV: &str = "BIGQUERY_ENDPOINT";

/// BigQuery's public endpoint.
const DEFAULT_ENDPOINT: &str = "https://bigquery.googleapis.com";

/// The BigQuery connector.
pub struct BigQuery;

/// What `create` stores: the Python connector's `BigQueryMetadata`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BigQueryMeta {
    /// The job's id.
    pub job_id: String,
    /// The project running the job.
    pub project: String,
    /// The job's location; `null` when the task named none.
    pub location: Option<String>,
    /// The user agent the job was created with.
    pub user_agent: String,
}

/// The parts of the template's `custom` this connector reads (what
/// `BigQueryTask.custom_config` writes).
#[derive(Debug, Default, Deserialize)]
struct Custom {
    #[serde(rename = "ProjectID")]
    project_id: Option<String>,
    #[serde(rename = "Location")]
    location: Option<String>,
    #[serde(rename = "Domain")]
    domain: Option<String>,
}

/// The API endpoint, without a trailing slash.
fn endpoint() -> String {
    std::env::var(ENDPOINT_ENV)
        .ok()
        .filter(|endpoint| !endpoint.is_empty())
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned())
        .trim_end_matches('/')
        .to_owned()
}

impl BigQueryMeta {
    /// `{endpoint}/bigquery/v2/projects/P/jobs/ID{suffix}?location=L`.
    fn job_url(&self, suffix: &str) -> String {
        let mut url = format!(
            "{}/bigquery/v2/projects/{}/jobs/{}{suffix}",
            endpoint(),
            encode(&self.project),
            encode(&self.job_id)
        );
        if let Some(location) = self.location.as_deref().filter(|l| !l.is_empty()) {
            url.push_str("?location=");
            url.push_str(&encode(location));
        }
        url
    }

    /// The job in the BigQuery console.
    fn console_link(&self) -> TaskLog {
        TaskLog::new(
            "BigQuery Console",
            format!(
                "https://console.cloud.google.com/bigquery?project={}&j=bq:{}:{}&page=queryresults",
                self.project,
                self.location.as_deref().unwrap_or("None"),
                self.job_id
            ),
        )
        .link_type(LinkType::Dashboard)
    }
}

/// A random job id, UUID v4 as the Python client makes them.
fn new_job_id() -> Result<String, Error> {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes)
        .map_err(|err| Error::failed(format!("no randomness for a job id: {err}")))?;
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

/// Sends `request` with the bearer token, turning a refused credential into
/// a failure naming the project and identity (never the credential). Other
/// statuses are the caller's to judge (`error_for_status` makes 429 and 5xx
/// retryable).
fn send(
    request: http::Request,
    bearer: &auth::Bearer,
    project: &str,
    what: &str,
) -> Result<http::Response, Error> {
    let response = request.bearer_auth(&bearer.token).send()?;
    match response.status() {
        401 | 403 => Err(Error::failed(format!(
            "BigQuery refused the credentials of {} for project {project} (HTTP {}) while \
             trying to {what}: {}",
            bearer.identity,
            response.status(),
            google_error_message(&response)
        ))),
        _ => Ok(response),
    }
}

/// The `error.message` of a Google API error answer.
fn google_error_message(response: &http::Response) -> String {
    response
        .json::<Value>()
        .ok()
        .and_then(|body| body.pointer("/error/message")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| "no message".to_owned())
}

#[derive(Deserialize)]
struct Job {
    #[serde(default)]
    status: JobStatus,
    #[serde(default)]
    configuration: Value,
}

#[derive(Default, Deserialize)]
struct JobStatus {
    #[serde(default)]
    state: String,
    #[serde(rename = "errorResult")]
    error_result: Option<ErrorProto>,
}

#[derive(Deserialize)]
struct ErrorProto {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    message: String,
}

/// `bq://project:dataset.table` of the job's destination table.
fn destination_uri(configuration: &Value) -> Option<String> {
    let table = configuration.pointer("/query/destinationTable")?;
    Some(format!(
        "bq://{}:{}.{}",
        table.get("projectId")?.as_str()?,
        table.get("datasetId")?.as_str()?,
        table.get("tableId")?.as_str()?
    ))
}

impl Connector for BigQuery {
    type Meta = BigQueryMeta;

    fn metadata() -> Metadata {
        Metadata::new("Bigquery Connector").task_type("bigquery_query_job_task")
    }

    fn create(task: TaskRequest) -> Result<BigQueryMeta, Error> {
        let custom: Custom = task.custom::<Option<Custom>>()?.unwrap_or_default();
        let project = custom.project_id.filter(|p| !p.is_empty()).ok_or_else(|| {
            Error::invalid_request("the task names no BigQuery project (custom.ProjectID)")
        })?;
        let statement = task
            .sql()
            .filter(|sql| !sql.trim().is_empty())
            .ok_or_else(|| {
                Error::invalid_request("the task has no SQL statement (sql.statement)")
            })?;
        let parameters = params::query_parameters(task.inputs_json(), task.input_types())?;
        let sdk_version = task
            .template()
            .pointer("/metadata/runtime/version")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let user_agent = format!(
            "Flyte/{sdk_version} (GPN:Union;{})",
            custom.domain.as_deref().unwrap_or_default()
        );
        let location = custom.location.filter(|l| !l.is_empty());
        let meta = BigQueryMeta {
            job_id: new_job_id()?,
            project,
            location,
            user_agent,
        };

        let mut query = json!({"query": statement, "useLegacySql": false});
        if !parameters.is_empty() {
            query["parameterMode"] = json!("NAMED");
            query["queryParameters"] = Value::Array(parameters);
        }
        let mut reference = json!({"projectId": meta.project, "jobId": meta.job_id});
        if let Some(location) = &meta.location {
            reference["location"] = json!(location);
        }
        let job = json!({"jobReference": reference, "configuration": {"query": query}});

        let bearer = auth::bearer(task.connection())?;
        let url = format!(
            "{}/bigquery/v2/projects/{}/jobs",
            endpoint(),
            encode(&meta.project)
        );
        let request = http::post(url)
            .header("User-Agent", &meta.user_agent)
            .json(&job)?;
        send(request, &bearer, &meta.project, "insert the query job")?.error_for_status()?;
        eprintln!(
            "inserted BigQuery job {} in project {}",
            meta.job_id, meta.project
        );
        Ok(meta)
    }

    fn get(meta: BigQueryMeta, ctx: &Context) -> Result<Resource, Error> {
        let bearer = auth::bearer(ctx.connection())?;
        let request = http::get(meta.job_url("")).header("User-Agent", &meta.user_agent);
        let job: Job = send(request, &bearer, &meta.project, "poll the job")?
            .error_for_status()?
            .json()?;
        let link = meta.console_link();
        if let Some(error) = job.status.error_result {
            let message = if error.reason.is_empty() {
                error.message
            } else {
                format!("{}: {}", error.reason, error.message)
            };
            return Ok(Resource::failed(message).log_link(link));
        }
        let phase = Phase::from_state(&job.status.state)?;
        let mut resource = Resource::new(phase)
            .message(job.status.state.clone())
            .log_link(link);
        if phase == Phase::Succeeded
            && let Some(uri) = destination_uri(&job.configuration)
        {
            let mut outputs = Outputs::new();
            outputs.insert_output("results", Output::dataframe(uri, ""));
            resource = resource.outputs(outputs);
        }
        Ok(resource)
    }

    fn delete(meta: BigQueryMeta, ctx: &Context) -> Result<(), Error> {
        let bearer = auth::bearer(ctx.connection())?;
        let request = http::post(meta.job_url("/cancel"))
            .header("User-Agent", &meta.user_agent)
            .body(Vec::new());
        let response = send(request, &bearer, &meta.project, "cancel the job")?;
        if response.status() == 404 {
            // Gone already (expired, or never created): nothing to cancel.
            eprintln!("BigQuery job {} not found; nothing to cancel", meta.job_id);
            return Ok(());
        }
        response.error_for_status()?;
        Ok(())
    }
}

flyte_connector_sdk::export_connector!(BigQuery);

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(location: Option<&str>) -> BigQueryMeta {
        BigQueryMeta {
            job_id: "5b3e0e4c-0b7a-4f5e-9a63-1f2a3b4c5d6e".into(),
            project: "flyte-proj".into(),
            location: location.map(str::to_owned),
            user_agent: "Flyte/2.12.1 (GPN:Union;development)".into(),
        }
    }

    #[test]
    fn the_meta_is_the_python_connectors_byte_for_byte() {
        let bytes = flyte_connector_sdk::__private::encode_meta(&meta(Some("US"))).expect("encode");
        assert_eq!(
            bytes,
            br#"{"job_id": "5b3e0e4c-0b7a-4f5e-9a63-1f2a3b4c5d6e", "project": "flyte-proj", "location": "US", "user_agent": "Flyte/2.12.1 (GPN:Union;development)"}"#
        );
        let bytes = flyte_connector_sdk::__private::encode_meta(&meta(None)).expect("encode");
        assert!(String::from_utf8_lossy(&bytes).contains(r#""location": null"#));
    }

    #[test]
    fn job_urls_carry_the_location_and_encode_ids() {
        let mut m = meta(Some("europe-west1"));
        m.project = "example.com:proj".into();
        assert!(m.job_url("/cancel").ends_with(
            "/bigquery/v2/projects/example.com%3Aproj/jobs/5b3e0e4c-0b7a-4f5e-9a63-1f2a3b4c5d6e/cancel?location=europe-west1"
        ));
        assert!(!meta(None).job_url("").contains('?'));
    }

    #[test]
    fn the_console_link_is_the_python_connectors() {
        assert_eq!(
            meta(Some("US")).console_link().uri,
            "https://console.cloud.google.com/bigquery?project=flyte-proj&j=bq:US:5b3e0e4c-0b7a-4f5e-9a63-1f2a3b4c5d6e&page=queryresults"
        );
    }

    #[test]
    fn job_ids_are_random_uuids() {
        let a = new_job_id().expect("id");
        let b = new_job_id().expect("id");
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
    }

    #[test]
    fn the_destination_table_is_a_bq_uri() {
        let configuration = json!({"query": {"destinationTable": {
            "projectId": "p", "datasetId": "_abc", "tableId": "anon123"}}});
        assert_eq!(
            destination_uri(&configuration).as_deref(),
            Some("bq://p:_abc.anon123")
        );
        assert_eq!(destination_uri(&json!({})), None);
    }
}

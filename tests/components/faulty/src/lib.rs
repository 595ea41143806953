//! Faulty connector: misbehaves on demand, to test how the host contains it.
//!
//! The task type picks the fault `create` shows:
//!
//! | task type | `create` |
//! | --- | --- |
//! | `panic` | panics (the guest traps) |
//! | `fail` | fails: `Error::Failed` |
//! | `invalid` | rejects the request: `Error::InvalidRequest` |
//! | `sleep` | spins forever, until the host's deadline stops it |
//! | `slow` | waits for input `ms` milliseconds (default 500) on the host's clock, then succeeds |
//! | `fetch` | sends input `method` (default GET) with input `headers` to input `url`; keeps the status, body size and body text in its meta |
//! | `fan_out` | GETs each URL of input `urls` in turn; keeps how many answered and the first error |
//! | `touch` | allocates input `mib` MiB, writes every page, waits `ms`, then succeeds |
//! | `shout` | fails with a message of input `kib` KiB |
//! | `memory` | allocates until the host's memory cap stops it |
//! | `inspect` | succeeds, keeping everything it was given (template, inputs, connection, env, ...) in its meta |
//! | `remember` | reports what earlier calls left in its memory, writes input `marker` there (see [`residue`]), waits `ms` |
//! | `tally` | reports what this instance saw before (see [`Tally`]); keeps input `keep_kib` KiB more for good, waits `ms` |
//! | `ssh` | runs one SSH or storage operation (see [`ssh`]); keeps its result or its error's kind and message |
//!
//! `get` succeeds with no outputs, reporting the meta as `custom_info`, and
//! `delete` succeeds, for any task type and any JSON resource meta. Metrics
//! are not implemented, nor are logs but for `inspect` tasks, whose log
//! lines are the keys (never the values) of the connection the call got.

#[cfg(target_arch = "wasm32")]
mod residue;

use flyte_connector_sdk::serde_json::{self, Value};
use flyte_connector_sdk::{http, prelude::*};

/// The faulty connector.
pub struct Faulty;

/// What one instance remembers across the calls it serves: an id drawn at
/// its first `tally` call (from the host's random source at run time, so
/// every instance has its own), how many `tally` calls it served, the
/// connection value `tenant` of each, and what `keep_kib` made it keep.
#[derive(Default)]
struct Tally {
    instance: Option<u64>,
    calls: u64,
    tenants: Vec<String>,
    kept: Vec<Vec<u8>>,
}

thread_local! {
    static TALLY: std::cell::RefCell<Tally> = std::cell::RefCell::default();
}

/// A `tally` call: `{"instance", "calls", "seen", "tenant"}`, `seen` being
/// the tenants of this instance's earlier calls.
fn tally(task: &TaskRequest) -> Result<Value, Error> {
    use std::hash::{BuildHasher, Hasher};
    let tenant = task
        .connection()
        .get("tenant")
        .unwrap_or_default()
        .to_owned();
    let keep_kib: usize = task.input("keep_kib").unwrap_or(0);
    let ms: u64 = task.input("ms").unwrap_or(0);
    let answer = TALLY.with_borrow_mut(|tally| {
        let instance = *tally.instance.get_or_insert_with(|| {
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u8(0);
            hasher.finish()
        });
        tally.calls += 1;
        let seen = tally.tenants.clone();
        tally.tenants.push(tenant.clone());
        tally
            .kept
            .push(std::hint::black_box(vec![1; keep_kib * 1024]));
        serde_json::json!({
            "instance": instance.to_string(),
            "calls": tally.calls,
            "seen": seen,
            "tenant": tenant,
        })
    });
    std::thread::sleep(std::time::Duration::from_millis(ms));
    Ok(answer)
}

/// A `fetch` call: `{"status", "bytes", "body"}`, the body as text when it is.
fn fetch(task: &TaskRequest) -> Result<Value, Error> {
    let url: String = task.input("url")?;
    let method: String = task.input("method").unwrap_or_else(|_| "GET".to_owned());
    let headers: std::collections::BTreeMap<String, String> =
        task.input("headers").unwrap_or_default();
    let mut request = http::request(&method, url);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let response = request.send()?;
    Ok(serde_json::json!({
        "status": response.status(),
        "bytes": response.body().len(),
        "body": response.text().ok(),
    }))
}

/// A storage error's kind and message, as [`ssh`] reports errors.
fn storage_error(err: &flyte_connector_sdk::storage::StorageError) -> Value {
    use flyte_connector_sdk::storage::StorageError;
    let kind = match err {
        StorageError::NotAllowed(_) => "not_allowed",
        StorageError::Unavailable(_) => "unavailable",
        StorageError::Invalid(_) => "invalid",
    };
    serde_json::json!({ "error": kind, "message": err.to_string() })
}

/// An `ssh` call: one SSH operation (input `op`: `exec`, `write`, `read`,
/// `tail`, `stat`, `list` or `connect`) on the destination of inputs
/// `host`, `port` and `user`, with the connection's `ssh_private_key` and
/// `known_hosts_data`; or a storage one: `exists` (input `uri`) and `copy`
/// (input `path` on the destination to input `uri`, refusing input
/// `max_bytes` or more). Its result as JSON, or the error's kind and
/// message (`{"error": KIND, "message"}`) so a test can tell the kinds
/// apart.
fn ssh(task: &TaskRequest) -> Result<Value, Error> {
    use flyte_connector_sdk::{
        ssh::{Destination, Exec, Session, SshError},
        storage::{self, Transfer},
    };
    let op: String = task.input("op")?;
    if op == "exists" {
        return Ok(match storage::exists(&task.input::<String>("uri")?) {
            Ok(found) => serde_json::json!({ "ok": found }),
            Err(err) => storage_error(&err),
        });
    }
    let connection = task.connection();
    let key = connection.get("ssh_private_key").unwrap_or_default();
    let mut to = Destination::new(
        task.input::<String>("host")?,
        task.input::<String>("user")?,
        key,
    )
    .port(task.input("port").unwrap_or(22))
    .known_hosts(connection.get("known_hosts_data").unwrap_or_default());
    if let Some(passphrase) = connection.get("ssh_passphrase") {
        to = to.passphrase(passphrase);
    }
    let path = || task.input::<String>("path");
    if op == "copy" {
        let session = match Session::connect(&to) {
            Ok(session) => session,
            Err(err) => {
                return Ok(serde_json::json!({ "error": "ssh", "message": err.to_string() }));
            }
        };
        let uri: String = task.input("uri")?;
        let max = task.input::<u64>("max_bytes").ok();
        return Ok(
            match storage::copy_from_ssh(&session, &path()?, &uri, max) {
                Ok(state) => serde_json::json!({ "ok": match state {
                    Transfer::Moving { moved, total } => serde_json::json!({"moving": [moved, total]}),
                    Transfer::Done(bytes) => serde_json::json!({"done": bytes}),
                    Transfer::Missing => serde_json::json!("missing"),
                    Transfer::TooLarge(bytes) => serde_json::json!({"too_large": bytes}),
                    Transfer::Failed(why) => serde_json::json!({"failed": why}),
                }}),
                Err(err) => storage_error(&err),
            },
        );
    }
    let run =
        || -> Result<Result<Value, SshError>, Error> {
            let session = match Session::connect(&to) {
                Ok(session) => session,
                Err(err) => return Ok(Err(err)),
            };
            Ok(match op.as_str() {
                "connect" => Ok(serde_json::json!({ "connected": to.shown() })),
                "exec" => {
                    let mut options = Exec::new();
                    if let Ok(stdin) = task.input::<String>("stdin") {
                        options = options.stdin(stdin);
                    }
                    if let Ok(ms) = task.input::<u64>("timeout_ms") {
                        options = options.timeout(std::time::Duration::from_millis(ms));
                    }
                    if let Ok(bytes) = task.input::<u64>("max_output_bytes") {
                        options = options.max_output_bytes(bytes);
                    }
                    let repeat: usize = task.input("repeat").unwrap_or(1);
                    let command: String = task.input("command")?;
                    let mut last = None;
                    for _ in 0..repeat.max(1) {
                        last = Some(session.exec_with(&command, options.clone()));
                    }
                    last.unwrap_or_else(|| Err(SshError::Invalid("no command ran".into())))
                        .map(|out| {
                            serde_json::json!({
                                "exit_status": out.exit_status,
                                "exit_signal": out.exit_signal,
                                "stdout": out.stdout_text(),
                                "stderr": out.stderr_text(),
                                "truncated": out.truncated,
                            })
                        })
                }
                "write" => {
                    let contents: String = task.input("contents")?;
                    let mode: u32 = task.input("mode").unwrap_or(0o644);
                    session
                        .write_file(&path()?, contents.as_bytes(), mode)
                        .map(|()| serde_json::json!({ "written": contents.len() }))
                }
                "read" => session
                    .read_file(
                        &path()?,
                        task.input("offset").unwrap_or(0),
                        task.input("length").unwrap_or(1 << 20),
                    )
                    .map(|bytes| serde_json::json!({ "text": String::from_utf8_lossy(&bytes) })),
                "tail" => session
                    .read_tail(
                        &path()?,
                        task.input("lines").unwrap_or(10),
                        task.input("max_bytes").unwrap_or(1 << 20),
                    )
                    .map(|bytes| serde_json::json!({ "text": String::from_utf8_lossy(&bytes) })),
                "stat" => session.stat(&path()?).map(|info| {
                    serde_json::json!(info.map(|i| serde_json::json!({
                        "size": i.size, "is_directory": i.is_directory, "mode": i.mode,
                        "modified": i.modified,
                    })))
                }),
                "list" => {
                    session.list_directory(&path()?).map(|entries| {
                        serde_json::json!(entries.into_iter().map(|(name, info)| serde_json::json!({
                    "name": name, "size": info.size, "is_directory": info.is_directory,
                })).collect::<Vec<_>>())
                    })
                }
                other => return Err(Error::invalid_request(format!("unknown ssh op `{other}`"))),
            })
        };
    Ok(match run()? {
        Ok(value) => serde_json::json!({ "ok": value }),
        Err(err) => {
            let kind = match &err {
                SshError::NotAllowed(_) => "not_allowed",
                SshError::HostKey(_) => "host_key",
                SshError::Authentication(_) => "authentication",
                SshError::Unreachable(_) => "unreachable",
                SshError::Timeout(_) => "timeout",
                SshError::Remote(_) => "remote",
                SshError::Invalid(_) => "invalid",
            };
            serde_json::json!({ "error": kind, "message": err.to_string() })
        }
    })
}

impl Connector for Faulty {
    /// Any JSON: `create` never returns one, so tests make their own.
    type Meta = Value;

    fn metadata() -> Metadata {
        Metadata::new("Faulty Connector")
            .task_type("panic")
            .task_type("fail")
            .task_type("invalid")
            .task_type("sleep")
            .task_type("slow")
            .task_type("fetch")
            .task_type("memory")
            .task_type("inspect")
            .task_type("remember")
            .task_type("tally")
            .task_type("fan_out")
            .task_type("touch")
            .task_type("shout")
            .task_type("ssh")
    }

    fn create(task: TaskRequest) -> Result<Value, Error> {
        match task.task_type() {
            "panic" => panic!("faulty connector panicked on purpose"),
            "fail" => Err(Error::failed("the external service said no")),
            "invalid" => Err(Error::invalid_request(
                "the faulty connector rejects every request",
            )),
            "sleep" => loop {
                std::hint::black_box(());
            },
            "slow" => {
                let ms: u64 = task.input("ms").unwrap_or(500);
                // A wasi:clocks pollable: the host waits without holding a thread.
                std::thread::sleep(std::time::Duration::from_millis(ms));
                Ok(serde_json::json!({ "slept_ms": ms }))
            }
            "fetch" => fetch(&task),
            "fan_out" => {
                let urls: Vec<String> = task.input("urls")?;
                let mut answered = 0;
                let mut first_error = None;
                for url in urls {
                    match http::get(url).send() {
                        Ok(_) => answered += 1,
                        Err(err) => {
                            first_error.get_or_insert(err.to_string());
                        }
                    }
                }
                Ok(serde_json::json!({ "answered": answered, "first_error": first_error }))
            }
            "touch" => {
                let mib: usize = task.input("mib")?;
                let ms: u64 = task.input("ms").unwrap_or(0);
                // Every byte written, so every page is really in memory.
                let touched = std::hint::black_box(vec![7u8; mib << 20]);
                std::thread::sleep(std::time::Duration::from_millis(ms));
                let sum: u64 = touched.iter().step_by(4096).map(|&b| u64::from(b)).sum();
                Ok(serde_json::json!({ "touched_mib": mib, "pages": sum / 7 }))
            }
            "shout" => {
                let kib: usize = task.input("kib")?;
                Err(Error::failed("!".repeat(kib << 10)))
            }
            "memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(std::hint::black_box(vec![1; 16 * 1024 * 1024]));
                }
            }
            #[cfg(target_arch = "wasm32")]
            "remember" => {
                let marker: u64 = task.input("marker")?;
                let pages: usize = task.input("pages").unwrap_or(1);
                let ms: u64 = task.input("ms").unwrap_or(0);
                let residue = residue::inspect_and_mark(marker, pages);
                eprintln!("remember: marked {marker}");
                std::thread::sleep(std::time::Duration::from_millis(ms));
                Ok(serde_json::json!({ "residue": residue }))
            }
            "tally" => tally(&task),
            "ssh" => ssh(&task),
            "inspect" => {
                let connection: serde_json::Map<String, Value> = task
                    .connection()
                    .iter()
                    .map(|(k, v)| (k.to_owned(), Value::from(v)))
                    .collect();
                let env: serde_json::Map<String, Value> =
                    std::env::vars().map(|(k, v)| (k, Value::from(v))).collect();
                Ok(serde_json::json!({
                    "connection": connection,
                    "env": env,
                    "template": task.template(),
                    "inputs": task.inputs_json(),
                    "input_types": task.input_types(),
                    "output_prefix": task.output_prefix(),
                    "execution_metadata": task.execution_metadata(),
                }))
            }
            other => Err(Error::invalid_request(format!(
                "the faulty connector does not serve task type `{other}`"
            ))),
        }
    }

    fn get(meta: Value, _ctx: &Context) -> Result<Resource, Error> {
        let resource = Resource::succeeded();
        if meta.is_object() {
            resource.custom_info(meta)
        } else {
            Ok(resource)
        }
    }

    fn delete(_meta: Value, _ctx: &Context) -> Result<(), Error> {
        Ok(())
    }

    fn get_logs(_meta: Value, query: LogsQuery) -> Result<LogsPage, Error> {
        if query.task_category.name != "inspect" {
            return Err(Error::NotImplemented);
        }
        let keys: Vec<String> = query.connection.iter().map(|(k, _)| k.to_owned()).collect();
        Ok(LogsPage::new(keys))
    }
}

flyte_connector_sdk::export_connector!(Faulty);

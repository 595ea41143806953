//! The docs' two tutorials (`docs/authoring/rust.md` and `python.md`) —
//! the jobs connector in Rust and in Python —
//! followed step by step: their shell blocks run as written and their file
//! blocks are written where they say, against a fake of the jobs API they
//! call; then the connector each builds is served and called over gRPC. The
//! only glue: the API's address replaces `127.0.0.1:8080`, this checkout
//! replaces `/path/to/flyte-connect`, the Rust crate's `target` and
//! `Cargo.lock` come from a cache so its deps compile once, and `pip`
//! installs from the wheels `make` fetched (`FLYTE_CONNECT_WHEELS`).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    extract::{Path as UrlPath, State},
    http::{HeaderMap, StatusCode},
    routing::{get, post},
};
use flyte_connect::proto::{
    connector::{CreateTaskRequest, DeleteTaskRequest, GetTaskRequest},
    core::{Connection, SimpleType, task_execution::Phase},
};
use flyte_connect_e2e::{
    Server, Workspace, binary,
    literals::{self, TypedInputs, category, int, simple, string},
};
use serde_json::{Value, json};

const TOKEN: &str = "s3cr3t";
const PLACEHOLDER_API: &str = "127.0.0.1:8080";
const PLACEHOLDER_CHECKOUT: &str = "/path/to/flyte-connect";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// One fenced block of the tutorial: its info string and text.
struct Block {
    info: String,
    text: String,
}

/// The Rust tutorial: its page and its section.
const RUST_TUTORIAL: (&str, &str) = (
    "docs/authoring/rust.md",
    "### Tutorial: a connector that calls an HTTP API",
);
/// The Python tutorial: its page and its section.
const PYTHON_TUTORIAL: (&str, &str) = (
    "docs/authoring/python.md",
    "### Tutorial: a connector in Python",
);

/// The fenced blocks of section `heading` of page `page`, in order.
fn tutorial_blocks((page, heading): (&str, &str)) -> Vec<Block> {
    let readme = std::fs::read_to_string(workspace_root().join(page))
        .unwrap_or_else(|err| panic!("read {page}: {err}"));
    let start = readme
        .find(heading)
        .unwrap_or_else(|| panic!("{page} has {heading:?}"));
    let section = &readme[start..];
    let end = section[4..]
        .find("\n## ")
        .into_iter()
        .chain(section[4..].find("\n### "))
        .min()
        .map_or(section.len(), |i| i + 4);
    let mut blocks = Vec::new();
    let mut lines = section[..end].lines();
    while let Some(line) = lines.next() {
        let Some(info) = line.strip_prefix("```") else {
            continue;
        };
        let text: Vec<&str> = lines
            .by_ref()
            .take_while(|l| !l.starts_with("```"))
            .collect();
        blocks.push(Block {
            info: info.trim().to_owned(),
            text: text.join("\n") + "\n",
        });
    }
    blocks
}

#[derive(Clone, Default)]
struct Api {
    polls: Arc<AtomicUsize>,
    cancels: Arc<AtomicUsize>,
}

fn authorized(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {TOKEN}"))
}

/// A fake of the jobs API the tutorial's connector calls.
async fn start_api() -> (SocketAddr, Api) {
    let api = Api::default();
    let app = Router::new()
        .route(
            "/jobs",
            post(|headers: HeaderMap, Json(body): Json<Value>| async move {
                if !authorized(&headers) || body["query"].as_str().is_none() {
                    return (StatusCode::UNAUTHORIZED, Json(json!({"error": "no"})));
                }
                (StatusCode::OK, Json(json!({"id": "job-7"})))
            }),
        )
        .route(
            "/jobs/{id}",
            get(|State(api): State<Api>, headers: HeaderMap| async move {
                if !authorized(&headers) {
                    return (StatusCode::UNAUTHORIZED, Json(json!({})));
                }
                // Running at the first poll of each job, then done.
                let state = if api.polls.fetch_add(1, Ordering::SeqCst) % 2 == 0 {
                    json!({"state": "running"})
                } else {
                    json!({"state": "done", "rows": 42})
                };
                (StatusCode::OK, Json(state))
            }),
        )
        .route(
            "/jobs/{id}/cancel",
            post(
                |State(api): State<Api>, UrlPath(_id): UrlPath<String>| async move {
                    api.cancels.fetch_add(1, Ordering::SeqCst);
                    Json(json!({}))
                },
            ),
        )
        .with_state(api.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the fake API");
    let addr = listener.local_addr().expect("its address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, api)
}

/// The shell script the tutorial amounts to, up to serving; and the
/// arguments its last step passes to `flyte-connect c0`.
fn script(blocks: &[Block], api: SocketAddr, cache: &Path) -> (String, Vec<String>) {
    let checkout = workspace_root().display().to_string();
    let fill = |text: &str| {
        text.replace(PLACEHOLDER_API, &api.to_string())
            .replace(PLACEHOLDER_CHECKOUT, &checkout)
    };
    let mut script = String::from("set -eu\n");
    let mut serve_args = Vec::new();
    for block in blocks {
        let mut words = block.info.split_whitespace();
        match (words.next(), words.next()) {
            (Some("sh"), None) => {
                for line in fill(&block.text).lines() {
                    if let Some(args) = line.trim().strip_prefix("flyte-connect c0") {
                        serve_args = args.split_whitespace().map(str::to_owned).collect();
                        continue;
                    }
                    if line.trim_start().starts_with("cargo build") {
                        script.push_str(&format!(
                            "[ -e target ] || ln -s '{}/target' target\ncp '{}/Cargo.lock' Cargo.lock\n",
                            cache.display(),
                            workspace_root().display()
                        ));
                    }
                    script.push_str(line);
                    script.push('\n');
                }
            }
            (Some(_), Some(path)) => {
                script.push_str(&format!(
                    "mkdir -p \"$(dirname '{path}')\"\ncat > '{path}' <<'TUTORIAL_EOF'\n{}TUTORIAL_EOF\n",
                    fill(&block.text)
                ));
            }
            _ => {}
        }
    }
    script.push_str("pwd > \"$TUTORIAL_DONE_IN\"\n");
    (script, serve_args)
}

/// The wheels the Python tutorial installs from (`make` fills it).
fn wheelhouse() -> PathBuf {
    std::env::var_os("FLYTE_CONNECT_WHEELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/wheels"))
}

/// Where the tutorial crate's build is cached between runs.
fn build_cache() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let cache = target.join("tutorial");
    std::fs::create_dir_all(cache.join("target")).expect("create the tutorial's build cache");
    cache
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_tutorial_builds_a_connector_that_calls_an_http_api() {
    follow(RUST_TUTORIAL, 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_tutorial_builds_the_same_connector_in_python() {
    follow(PYTHON_TUTORIAL, 8).await;
}

/// Follows the tutorial under `heading` (at least `min_blocks` blocks), then
/// serves what it built and calls it as Flyte would.
async fn follow(heading: (&str, &str), min_blocks: usize) {
    let (api, calls) = start_api().await;
    let blocks = tutorial_blocks(heading);
    assert!(blocks.len() >= min_blocks, "the tutorial lost its steps");
    let (script, serve_args) = script(&blocks, api, &build_cache());
    assert!(
        !serve_args.is_empty(),
        "the tutorial ends by serving the connector"
    );

    let home = Workspace::new();
    let done_in = home.path().join("done-in");
    let bin_dir = binary()
        .parent()
        .map(Path::to_path_buf)
        .expect("the binary's folder");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let home_path = home.path().to_owned();
    let done = done_in.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("sh")
            .arg("-c")
            .arg(&script)
            .current_dir(&home_path)
            .env("PATH", path)
            .env("TUTORIAL_DONE_IN", &done)
            // `pip install` (the Python tutorial) from the wheels `make`
            // fetched, never the network.
            .env("PIP_NO_INDEX", "1")
            .env("PIP_FIND_LINKS", wheelhouse())
            .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET_DIR")
            .output()
            .expect("run the tutorial")
    })
    .await
    .expect("join");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "the tutorial failed:\n{printed}");
    assert!(printed.contains("phase SUCCEEDED"), "{printed}");
    assert!(printed.contains("rows = 42"), "{printed}");
    assert!(!printed.contains(TOKEN), "{printed}");

    // Serve it as its last step says, and call it as Flyte would.
    let crate_dir = std::fs::read_to_string(&done_in).expect("where the tutorial ended");
    let crate_dir = Path::new(crate_dir.trim());
    let args: Vec<&str> = serve_args.iter().map(String::as_str).collect();
    let server = Server::start(&args, crate_dir);
    assert_eq!(server.connector_names().await, ["Jobs Connector"]);
    let mut tasks = server.tasks().await;
    let connection = Connection {
        secrets: [("jobs_token".to_owned(), TOKEN.to_owned())].into(),
        ..Default::default()
    };
    let inputs = TypedInputs(vec![(
        "query",
        string("select 1"),
        simple(SimpleType::String),
    )]);
    let meta = tasks
        .create_task(CreateTaskRequest {
            connection: Some(connection.clone()),
            ..literals::create_request("jobs", &inputs)
        })
        .await
        .expect("CreateTask")
        .into_inner()
        .resource_meta;
    let mut phases = Vec::new();
    let mut outputs = None;
    for _ in 0..2 {
        let resource = tasks
            .get_task(GetTaskRequest {
                task_category: category("jobs"),
                resource_meta: meta.clone(),
                connection: Some(connection.clone()),
                ..Default::default()
            })
            .await
            .expect("GetTask")
            .into_inner()
            .resource
            .expect("a resource");
        phases.push(resource.phase());
        outputs = resource.outputs;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(phases, [Phase::Running, Phase::Succeeded]);
    let outputs = outputs.expect("outputs once done");
    assert_eq!(outputs.literals[0].name, "rows");
    assert_eq!(outputs.literals[0].value, Some(int(42)));
    tasks
        .delete_task(DeleteTaskRequest {
            task_category: category("jobs"),
            resource_meta: meta,
            connection: Some(connection),
        })
        .await
        .expect("DeleteTask");
    assert_eq!(calls.cancels.load(Ordering::SeqCst), 1);
}

//! `flyte-connect run`: one task through one component from files, with no
//! cluster — to success, to failure, and cancelled with Ctrl-C.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use flyte_connect::proto::core::{
    SimpleType, TaskTemplate, TypedInterface, Variable, VariableEntry, VariableMap,
};
use flyte_connect_e2e::{
    Output, Workspace,
    fake_databricks::{self, FakeDatabricks},
    literals::{list_of, simple},
    spawn, wait_with_timeout,
};
use nix::sys::signal::Signal;

const TOKEN: &str = "dapi-run-loop-token";
const EXITED_WITHIN: Duration = Duration::from_secs(60);

/// Runs `flyte-connect run ARGS` in `dir` to its end.
fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut all = vec!["run".to_owned()];
    all.extend(args.iter().map(|a| a.to_string()));
    let (mut child, output, _lines) = spawn(&all, dir, env);
    let status = wait_with_timeout(&mut child, EXITED_WITHIN, &output);
    std::thread::sleep(Duration::from_millis(100));
    (status.code().unwrap_or(-1), output.text())
}

/// [`run`] from async code, while the fake workspace keeps serving.
async fn run_async(dir: &Workspace, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let dir_path = dir.path().to_owned();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        run(&dir_path, &args, &env)
    })
    .await
    .expect("join")
}

fn write_json(dir: &Workspace, name: &str, value: &impl serde::Serialize) -> String {
    let text = serde_json::to_string(value).expect("JSON");
    dir.write(name, text.as_bytes()).display().to_string()
}

/// A folder with `databricks.wasm`, a manifest allowing the fake, and the
/// template of a run named `run_name`.
fn databricks_dir(fake: &FakeDatabricks, run_name: &str) -> Workspace {
    let dir = Workspace::with_components(&["databricks"]);
    dir.write(
        "databricks.toml",
        format!("allowed_hosts = [\"http://{}\"]\n", fake.addr()).as_bytes(),
    );
    let template =
        fake_databricks::task_template(&fake.base_url(), fake_databricks::job_conf(run_name));
    write_json(&dir, "task.json", &template);
    dir
}

fn lines_in_order(output: &str, expected: &[&str]) {
    let mut rest = output;
    for line in expected {
        let at = rest
            .find(line)
            .unwrap_or_else(|| panic!("{line:?} missing, or out of order, in:\n{output}"));
        rest = &rest[at + line.len()..];
    }
}

#[test]
fn echo_runs_from_json_files_and_prints_its_outputs() {
    let dir = Workspace::with_components(&["echo"]);
    let variable = |name: &str, literal_type| VariableEntry {
        key: name.into(),
        value: Some(Variable {
            r#type: Some(literal_type),
            ..Default::default()
        }),
    };
    let template = TaskTemplate {
        r#type: "echo".into(),
        interface: Some(TypedInterface {
            inputs: Some(VariableMap {
                variables: vec![
                    variable("n", simple(SimpleType::Integer)),
                    variable("xs", list_of(simple(SimpleType::Float))),
                ],
            }),
            outputs: None,
        }),
        ..Default::default()
    };
    let template = write_json(&dir, "echo.json", &template);
    let inputs = write_json(
        &dir,
        "inputs.json",
        &serde_json::json!({"n": 3, "xs": [0.5, 2]}),
    );
    let (code, output) = run(
        dir.path(),
        &["echo", "--template", &template, "--inputs", &inputs],
        &[],
    );
    assert_eq!(code, 0, "{output}");
    lines_in_order(
        &output,
        &[
            "Echo Connector created the task",
            "phase SUCCEEDED: echoed 2 inputs",
            "outputs:",
            "n = 3",
            "xs = [0.5,2.0]",
        ],
    );

    let undeclared = write_json(&dir, "bad.json", &serde_json::json!({"m": 1}));
    let (code, output) = run(
        dir.path(),
        &["echo", "--template", &template, "--inputs", &undeclared],
        &[],
    );
    assert_eq!(code, 2, "{output}");
    assert!(
        output.contains("input \"m\" is not declared by the template's interface"),
        "{output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_databricks_run_is_followed_to_success_or_failure() {
    let fake = FakeDatabricks::start(TOKEN).await;
    let dir = databricks_dir(&fake, "nightly");
    let secret = format!("databricks_token={TOKEN}");
    let args = [
        "databricks.wasm",
        "--template",
        "task.json",
        "--secret",
        secret.as_str(),
        "--poll-interval",
        "0.05",
    ];
    let (code, output) = run_async(&dir, &args, &[]).await;
    assert_eq!(code, 0, "{output}");
    lines_in_order(
        &output,
        &[
            "Databricks Connector created the task",
            "\"run_id\": \"1000\"",
            "phase INITIALIZING: Waiting for cluster",
            &format!(
                "log: Databricks Console {}/#job/2000/run/1000",
                fake.base_url()
            ),
            "phase RUNNING: In run",
            "phase SUCCEEDED",
        ],
    );
    assert!(!output.contains(TOKEN), "{output}");

    // The secret from the environment this time.
    let failing = databricks_dir(&fake, "fails");
    let args = [
        "databricks.wasm",
        "--template",
        "task.json",
        "--secret",
        "databricks_token",
        "--poll-interval",
        "0.05",
    ];
    let (code, output) = run_async(&failing, &args, &[("DATABRICKS_TOKEN", TOKEN)]).await;
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains("phase FAILED: Task failed with error: ZeroDivisionError"),
        "{output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_cancels_the_task() {
    let fake = FakeDatabricks::start(TOKEN).await;
    let dir = databricks_dir(&fake, "queued");
    let secret = format!("databricks_token={TOKEN}");
    let args: Vec<String> = [
        "run",
        "databricks.wasm",
        "--template",
        "task.json",
        "--secret",
        &secret,
        "--poll-interval",
        "30",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let (mut child, output, lines) = spawn(&args, dir.path(), &[]);
    let started = Instant::now();
    while !output.text().contains("phase QUEUED") {
        assert!(started.elapsed() < EXITED_WITHIN, "{}", output.text());
        let _ = lines.try_recv();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("a pid"));
    nix::sys::signal::kill(pid, Signal::SIGINT).expect("send SIGINT");
    let status =
        tokio::task::block_in_place(|| wait_with_timeout(&mut child, EXITED_WITHIN, &output));
    std::thread::sleep(Duration::from_millis(100));
    let text: String = Output::text(&output);
    assert_eq!(status.code(), Some(130), "{text}");
    lines_in_order(&text, &["interrupted: cancelling the task", "cancelled"]);
    assert!(fake.cancelled(1000), "the run was not cancelled");
}

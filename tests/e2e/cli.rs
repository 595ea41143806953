//! The command line: plugin folders, `--modules` resolution and failures.

use std::time::Duration;

use flyte_connect_e2e::{Server, Workspace, run_to_exit};

#[tokio::test]
async fn broken_file_in_a_plugin_folder_is_a_warning_naming_it() {
    let plugins = Workspace::with_components(&["echo"]);
    plugins.write("broken.wasm", b"this is not WebAssembly");
    let server = Server::start(
        &["--plugin-dir", &plugins.path().display().to_string()],
        plugins.path(),
    );
    assert_eq!(server.connector_names().await, ["Echo Connector"]);
    let output = server.output.text();
    assert!(
        output
            .lines()
            .any(|l| l.contains("WARN") && l.contains("broken.wasm")),
        "no warning names broken.wasm:\n{output}"
    );
}

#[test]
fn missing_module_is_a_fatal_error_naming_it() {
    let cwd = Workspace::new();
    let (status, output) = run_to_exit(
        &[
            "c0",
            "--port",
            "0",
            "--prometheus_port",
            "0",
            "--modules",
            "no_such_connector",
        ],
        cwd.path(),
        Duration::from_secs(60),
    );
    assert!(!status.success(), "{output}");
    assert!(output.contains("no_such_connector"), "{output}");
    assert!(output.contains("not found"), "{output}");
}

#[test]
fn broken_module_is_a_fatal_error_saying_why() {
    let cwd = Workspace::new();
    cwd.write("broken.wasm", b"\0asm garbage");
    let (status, output) = run_to_exit(
        &[
            "c0",
            "--port",
            "0",
            "--prometheus_port",
            "0",
            "--modules",
            "broken.wasm",
        ],
        cwd.path(),
        Duration::from_secs(60),
    );
    assert!(!status.success(), "{output}");
    assert!(
        output.contains("cannot load module \"broken.wasm\""),
        "{output}"
    );
    assert!(output.contains("cannot compile"), "{output}");
}

#[tokio::test]
async fn module_names_resolve_against_the_working_directory_and_plugin_folders() {
    let cwd = Workspace::with_components(&["echo"]);
    let plugins = Workspace::with_components(&["faulty"]);
    let server = Server::start(
        &[
            "--plugin-dir",
            &plugins.path().display().to_string(),
            "--modules",
            "echo",
            "faulty",
        ],
        cwd.path(),
    );
    let names = server.connector_names().await;
    assert_eq!(names, ["Echo Connector", "Faulty Connector"]);
}

#[tokio::test]
async fn the_same_component_reached_twice_is_loaded_once() {
    let plugins = Workspace::with_components(&["echo"]);
    let dir = plugins.path().display().to_string();
    let module = plugins.path().join("echo.wasm").display().to_string();
    let server = Server::start(
        &["--plugin-dir", &dir, "--modules", &module],
        plugins.path(),
    );
    assert_eq!(server.connector_names().await, ["Echo Connector"]);
    let output = server.output.text();
    assert!(!output.contains("already served"), "{output}");
}

#[tokio::test]
async fn a_second_component_for_the_same_task_type_is_a_warning() {
    let plugins = Workspace::with_components(&["echo"]);
    plugins.add_component("echo", "echo-copy.wasm");
    let server = Server::start(
        &["--plugin-dir", &plugins.path().display().to_string()],
        plugins.path(),
    );
    assert_eq!(server.connector_names().await, ["Echo Connector"]);
    let output = server.output.text();
    assert!(
        output.lines().any(|l| l.contains("WARN")
            && l.contains("echo-copy.wasm")
            && l.contains("already served")),
        "{output}"
    );
}

#[tokio::test]
async fn plugin_folders_come_from_the_environment_then_the_default_folder() {
    let plugins = Workspace::with_components(&["faulty"]);
    let cwd = Workspace::new();
    let env_path = format!("/nonexistent:{}", plugins.path().display());
    let server = Server::start_with_env(&[], cwd.path(), &[("FLYTE_CONNECTOR_PATH", &env_path)]);
    assert_eq!(server.connector_names().await, ["Faulty Connector"]);
    drop(server);

    let cwd = Workspace::new();
    std::fs::create_dir(cwd.path().join("connectors")).expect("mkdir");
    std::fs::copy(
        flyte_connect_e2e::component("echo"),
        cwd.path().join("connectors/echo.wasm"),
    )
    .expect("copy");
    let server = Server::start(&[], cwd.path());
    assert_eq!(server.connector_names().await, ["Echo Connector"]);
}

#[test]
fn start_up_prints_the_table_of_connectors() {
    let plugins = Workspace::with_components(&["echo", "faulty"]);
    let (status, output) = run_to_exit(
        &[
            "c0",
            "--port",
            "0",
            "--prometheus_port",
            "0",
            "--timeout",
            "1",
            "--plugin-dir",
            &plugins.path().display().to_string(),
        ],
        plugins.path(),
        Duration::from_secs(60),
    );
    assert!(status.success(), "{output}");
    assert!(output.contains("Connector Metadata"), "{output}");
    assert!(
        output.lines().any(|l| l.contains("Faulty Connector")
            && l.contains(
                "fail (0) fan_out (0) fetch (0) inspect (0) invalid (0) memory (0) panic (0) remember (0) shout (0) sleep (0) slow (0)"
            )),
        "{output}"
    );
    assert!(
        output
            .lines()
            .any(|l| l.contains("Echo Connector") && l.contains("echo (0)")),
        "{output}"
    );
}

#[tokio::test]
async fn an_invalid_manifest_skips_its_plugin_with_a_warning() {
    let plugins = Workspace::with_components(&["echo", "faulty"]);
    plugins.write("faulty.toml", b"allowed_host = [\"typo.example.com\"]\n");
    let server = Server::start(
        &["--plugin-dir", &plugins.path().display().to_string()],
        plugins.path(),
    );
    assert_eq!(server.connector_names().await, ["Echo Connector"]);
    let output = server.output.text();
    assert!(
        output
            .lines()
            .any(|l| l.contains("WARN") && l.contains("faulty.toml")),
        "{output}"
    );
}

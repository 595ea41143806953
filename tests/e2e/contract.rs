//! The contract a component is built against (`flyte:connector@1.x`,
//! `wit/connector.wit`): a component of a later 1.y loads and serves, as
//! wasmtime finds a semver-compatible export; one of another major is
//! refused with a message naming both; the load log names the contract and
//! the SDK that built the component. (The committed 1.x components are
//! served through the whole conformance suite: `tests/python`.)

use flyte_connect::proto::core::SimpleType;
use flyte_connect_e2e::{
    Server, Workspace, component,
    literals::{self, TypedInputs, int, simple},
};

/// The version of `wit/connector.wit`, the contract this build serves.
fn current_version() -> String {
    let wit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit/connector.wit"),
    )
    .expect("wit/connector.wit");
    wit.lines()
        .find_map(|line| line.strip_prefix("package flyte:connector@"))
        .and_then(|rest| rest.strip_suffix(';'))
        .expect("the package line")
        .to_owned()
}

/// The echo component's bytes, its `flyte:connector` interfaces renamed to
/// `version` (as many characters as the current version): the component it
/// would be had it been built against that version of a contract with the
/// same types.
fn echo_built_against(version: &str) -> Vec<u8> {
    let current = current_version();
    assert_eq!(version.len(), current.len());
    let mut bytes = std::fs::read(component("echo")).expect("read echo.wasm");
    let mut renamed = 0;
    for interface in ["types", "connector"] {
        let from = format!("flyte:connector/{interface}@{current}");
        let to = format!("flyte:connector/{interface}@{version}");
        let mut at = 0;
        while let Some(found) = find(&bytes[at..], from.as_bytes()) {
            let start = at + found;
            bytes[start..start + to.len()].copy_from_slice(to.as_bytes());
            at = start + to.len();
            renamed += 1;
        }
    }
    assert!(
        renamed >= 2,
        "echo.wasm names its interfaces {renamed} times"
    );
    bytes
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn serve(wasm: &[u8]) -> (Workspace, Server) {
    let plugins = Workspace::new();
    plugins.write("echo.wasm", wasm);
    let dir = plugins.path().display().to_string();
    let server = Server::start(&["--plugin-dir", &dir], plugins.path());
    (plugins, server)
}

#[tokio::test]
async fn a_component_of_a_later_minor_version_loads_and_serves() {
    let (_plugins, server) = serve(&echo_built_against("1.9.0"));
    assert_eq!(server.connector_names().await, ["Echo Connector"]);
    let inputs = TypedInputs(vec![("n", int(3), simple(SimpleType::Integer))]);
    server
        .tasks()
        .await
        .create_task(literals::create_request("echo", &inputs))
        .await
        .expect("served");
    let output = server.output.text();
    assert!(
        output.contains("contract=flyte:connector@1.9.0"),
        "{output}"
    );
}

#[tokio::test]
async fn a_component_of_another_major_version_is_refused_naming_both() {
    for version in ["0.1.0", "2.0.0"] {
        let (_plugins, server) = serve(&echo_built_against(version));
        assert!(server.connector_names().await.is_empty(), "{version}");
        let output = server.output.text();
        assert!(
            output.lines().any(|l| l.contains("WARN")
                && l.contains(&format!("built against flyte:connector@{version}"))
                && l.contains("this server serves flyte:connector@1.x")),
            "{version}:\n{output}"
        );
    }
}

#[tokio::test]
async fn the_load_log_names_the_contract_and_the_sdk() {
    let plugins = Workspace::with_components(&["echo", "echo-py"]);
    let dir = plugins.path().display().to_string();
    let server = Server::start(&["--plugin-dir", &dir], plugins.path());
    let output = server.output.text();
    for (connector, sdk) in [
        ("Echo Connector", "(Rust)"),
        ("Echo Connector (Python)", "(Python)"),
    ] {
        assert!(
            output.lines().any(|l| l.contains("loaded")
                && l.contains(&format!("connector=\"{connector}\""))
                && l.contains(&format!("contract=flyte:connector@{}", current_version()))
                && l.contains("sdk=\"flyte-connector-sdk ")
                && l.contains(sdk)),
            "{connector}:\n{output}"
        );
    }
}

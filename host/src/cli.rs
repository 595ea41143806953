//! The command line, compatible with the Python connector server:
//!
//! ```text
//! flyte-connect c0 --port 8000 --prometheus_port 9090 --worker 10 \
//!     --timeout SECONDS --modules my_connector [--modules other.wasm]
//! ```

use std::{net::IpAddr, path::PathBuf, time::Duration};

use clap::Parser;

use crate::{runtime::RuntimeConfig, server::ServerConfig};

/// Serve Flyte connectors compiled to WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "flyte-connect", version, about, long_about = None)]
pub struct Cli {
    /// Port of the gRPC connector service.
    #[arg(long, default_value_t = 8000)]
    pub port: u16,

    /// Port of the Prometheus metrics endpoint (`/metrics`).
    #[arg(
        long = "prometheus_port",
        visible_alias = "prometheus-port",
        default_value_t = 9090
    )]
    pub prometheus_port: u16,

    /// Threads that run connector code.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..))]
    pub worker: u16,

    /// Stop the server after this many seconds (for tests).
    #[arg(long)]
    pub timeout: Option<u64>,

    /// Connector components to load: a path to a `.wasm` file, or a name
    /// resolved to `NAME.wasm` in the working directory and the plugin folders.
    /// Repeatable, and takes several values.
    #[arg(long, num_args = 1.., action = clap::ArgAction::Append)]
    pub modules: Vec<String>,

    /// Folder whose `*.wasm` components are all loaded (repeatable). Default:
    /// the colon-separated `FLYTE_CONNECTOR_PATH`, else `./connectors` if it exists.
    #[arg(long = "plugin-dir", visible_alias = "plugin_dir")]
    pub plugin_dirs: Vec<PathBuf>,

    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    pub host: IpAddr,

    /// Connector calls that may run at once; more are refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "FLYTE_CONNECT_MAX_CALLS", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_calls: u32,

    /// Deadline of one connector call in seconds, unless its manifest sets one.
    #[arg(long, env = "FLYTE_CONNECT_CALL_TIMEOUT", default_value_t = 60.0)]
    pub call_timeout: f64,

    /// Memory cap of one connector call in MiB, unless its manifest sets one.
    #[arg(long, env = "FLYTE_CONNECT_MEMORY_MB", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub memory_limit_mb: u32,

    /// Where compiled components are cached across restarts.
    #[arg(long, env = "FLYTE_CONNECT_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Do not cache compiled components on disk.
    #[arg(long)]
    pub no_cache: bool,
}

impl Cli {
    /// Parses the process arguments. A leading `c0`, as Flyte deployments
    /// run the Python server, is accepted and ignored.
    pub fn parse_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString>,
    {
        let mut args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        if args.get(1).is_some_and(|arg| arg == "c0") {
            args.remove(1);
        }
        Self::try_parse_from(args)
    }

    /// The server configuration these arguments describe.
    pub fn into_config(self) -> Result<ServerConfig, String> {
        let call_timeout = Duration::try_from_secs_f64(self.call_timeout)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                format!(
                    "--call-timeout {} is not a positive number of seconds",
                    self.call_timeout
                )
            })?;
        let defaults = RuntimeConfig::default();
        let memory_bytes = self.memory_limit_mb as usize * 1024 * 1024;
        Ok(ServerConfig {
            host: self.host,
            port: self.port,
            prometheus_port: self.prometheus_port,
            timeout: self.timeout.map(Duration::from_secs),
            modules: self.modules,
            plugin_dirs: self.plugin_dirs,
            runtime: RuntimeConfig {
                guest_threads: usize::from(self.worker),
                max_concurrent_calls: self.max_concurrent_calls as usize,
                default_timeout: call_timeout,
                default_memory_bytes: memory_bytes,
                max_memory_bytes: defaults.max_memory_bytes.max(memory_bytes),
                cache_dir: if self.no_cache {
                    None
                } else {
                    self.cache_dir.or(defaults.cache_dir)
                },
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::parse_args(std::iter::once("flyte-connect").chain(args.iter().copied()))
            .expect("valid arguments")
    }

    #[test]
    fn python_command_line_is_accepted() {
        let cli = parse(&[
            "c0",
            "--port",
            "8001",
            "--prometheus_port",
            "9091",
            "--worker",
            "4",
            "--timeout",
            "5",
            "--modules",
            "a",
            "--modules",
            "b.wasm",
            "c",
        ]);
        assert_eq!(cli.port, 8001);
        assert_eq!(cli.prometheus_port, 9091);
        assert_eq!(cli.worker, 4);
        assert_eq!(cli.timeout, Some(5));
        assert_eq!(cli.modules, ["a", "b.wasm", "c"]);
    }

    #[test]
    fn c0_is_optional_and_kebab_case_works() {
        let cli = parse(&["--prometheus-port", "9999"]);
        assert_eq!(cli.prometheus_port, 9999);
        assert_eq!(cli.port, 8000);
        assert_eq!(cli.worker, 10);
    }

    #[test]
    fn zero_workers_is_rejected() {
        assert!(Cli::parse_args(["flyte-connect", "--worker", "0"]).is_err());
    }
}

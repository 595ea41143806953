//! The command line, compatible with the Python connector server:
//!
//! ```text
//! flyte-connect c0 --port 8000 --prometheus_port 9090 --worker 10 \
//!     --timeout SECONDS --modules my_connector [--modules other.wasm]
//! ```
//!
//! and, for connector authors, one task through one component:
//!
//! ```text
//! flyte-connect run my_connector.wasm --template task.json --inputs inputs.json \
//!     --secret api_token=...
//! ```

use std::{net::IpAddr, path::PathBuf, time::Duration};

use clap::Parser;

use crate::{
    loading::scan,
    local_run::{self, RunOptions},
    manifest,
    runtime::{
        BudgetSize, CapabilityArgs, IdleLimit, ReturnLimits, ReuseLimits, RuntimeConfig, SlotBudget,
    },
    server::ServerConfig,
    size::Size,
};

/// The defaults the flags show and fall back to: the types' own.
fn defaults() -> ServerConfig {
    ServerConfig::default()
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// Serve connectors (`flyte-connect [c0] ...`).
    Serve(Box<Cli>),
    /// Run one task through one component (`flyte-connect run ...`).
    Run(Box<RunArgs>),
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (colored on a terminal).
    #[default]
    Text,
    /// One JSON object per line: timestamp, level, target, message, the
    /// event's fields, and the call's (`span`), as log pipelines take them.
    Json,
}

impl Command {
    /// How the command's log lines are written: as asked when serving;
    /// text for a local run, which a person reads.
    pub fn log_format(&self) -> LogFormat {
        match self {
            Command::Serve(cli) => cli.log_format,
            Command::Run(_) => LogFormat::Text,
        }
    }

    /// Parses the process arguments: `run` selects the local run loop,
    /// anything else is the server's command line.
    pub fn parse_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString>,
    {
        let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        if args.get(1).is_some_and(|arg| arg == "run") {
            return RunArgs::try_parse_from(&args[1..]).map(|run| Command::Run(Box::new(run)));
        }
        Cli::parse_args(args).map(|cli| Command::Serve(Box::new(cli)))
    }
}

/// Run one task through one connector component, without a Flyte cluster:
/// create it, poll it until it ends, print what happens. Ctrl-C cancels it.
/// Exit code: 0 succeeded, 1 failed, 130 cancelled.
#[derive(Debug, Parser)]
#[command(name = "flyte-connect run")]
pub struct RunArgs {
    /// The component: a path to a `.wasm`, or a name resolved to `NAME.wasm`
    /// in the working directory and the plugin folders. Its manifest
    /// (`NAME.toml` beside it) applies as when served.
    pub component: String,

    /// The task template: `flyteidl2.core.TaskTemplate` as proto3 JSON, or
    /// serialized protobuf.
    #[arg(long)]
    pub template: PathBuf,

    /// The task's inputs: a JSON object of input name → value (as a
    /// connector sees them), typed by the template's interface.
    #[arg(long)]
    pub inputs: Option<PathBuf>,

    /// A connection secret: `KEY=VALUE`, or `KEY` to take the value of the
    /// environment variable `KEY` (else `KEY` in upper case). Repeatable.
    #[arg(long = "secret")]
    pub secrets: Vec<String>,

    /// Seconds between polls.
    #[arg(long, default_value_t = local_run::DEFAULT_POLL_INTERVAL.as_secs_f64())]
    pub poll_interval: f64,

    /// The output prefix handed to the connector.
    #[arg(long, default_value = "")]
    pub output_prefix: String,

    /// Folders to find the component in by name (besides the working directory).
    #[arg(long = "plugin-dir")]
    pub plugin_dirs: Vec<PathBuf>,

    /// Deadline of one connector call in seconds, unless the manifest sets one.
    #[arg(long, default_value_t = defaults().runtime.default_timeout.as_secs_f64())]
    pub call_timeout: f64,

    /// Do not cache the compiled component on disk.
    #[arg(long)]
    pub no_cache: bool,

    /// What the capabilities manifests may grant read of the platform.
    #[command(flatten)]
    pub capabilities: CapabilityArgs,
}

impl RunArgs {
    /// What to run, read from the files and the environment the arguments name.
    pub fn into_options(self) -> anyhow::Result<RunOptions> {
        let cwd = std::env::current_dir()?;
        let component = scan::resolve_module(&self.component, &cwd, &self.plugin_dirs)?;
        let template = local_run::read_template(&self.template)?;
        let inputs = match &self.inputs {
            Some(path) => local_run::read_inputs(path, &template)?,
            None => Default::default(),
        };
        let secrets = self
            .secrets
            .iter()
            .map(|secret| secret_value(secret))
            .collect::<anyhow::Result<_>>()?;
        let defaults = RuntimeConfig::default();
        Ok(RunOptions {
            component,
            template,
            inputs,
            secrets,
            poll_interval: positive_seconds("--poll-interval", self.poll_interval)
                .map_err(anyhow::Error::msg)?,
            output_prefix: self.output_prefix,
            runtime: RuntimeConfig {
                call_slots: 4,
                default_timeout: positive_seconds("--call-timeout", self.call_timeout)
                    .map_err(anyhow::Error::msg)?,
                cache_dir: if self.no_cache {
                    None
                } else {
                    defaults.cache_dir.clone()
                },
                capabilities: self.capabilities.into_config()?,
                ..defaults
            },
        })
    }
}

/// `--secret KEY=VALUE`, or `--secret KEY`: the value of variable `KEY`,
/// else `KEY` in upper case.
fn secret_value(secret: &str) -> anyhow::Result<(String, String)> {
    match secret.split_once('=') {
        Some((key, value)) => Ok((key.to_owned(), value.to_owned())),
        None => std::env::var(secret)
            .or_else(|_| std::env::var(secret.to_ascii_uppercase()))
            .map(|value| (secret.to_owned(), value))
            .map_err(|_| {
                anyhow::anyhow!(
                    "--secret {secret}: no environment variable {secret} or {}",
                    secret.to_ascii_uppercase()
                )
            }),
    }
}

/// Serve Flyte connectors compiled to WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "flyte-connect", version, about, long_about = None)]
pub struct Cli {
    /// Port of the gRPC connector service.
    #[arg(long, default_value_t = defaults().port)]
    pub port: u16,

    /// Port of the Prometheus metrics endpoint (`/metrics`).
    #[arg(
        long = "prometheus_port",
        visible_alias = "prometheus-port",
        default_value_t = defaults().prometheus_port
    )]
    pub prometheus_port: u16,

    /// Threads that serve gRPC and run connector code [default: one per CPU core].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub worker: Option<u16>,

    /// Stop the server after this many seconds (for tests).
    #[arg(long)]
    pub timeout: Option<u64>,

    /// Connector components to load: a path to a `.wasm` file, or a name
    /// resolved to `NAME.wasm` in the working directory and the plugin folders.
    /// Repeatable, and takes several values. They are not reloaded.
    #[arg(long, num_args = 1.., action = clap::ArgAction::Append)]
    pub modules: Vec<String>,

    /// Folder whose `*.wasm` components are all loaded and kept in step with
    /// the files (repeatable). Default: the colon-separated
    /// `FLYTE_CONNECTOR_PATH`, else `./connectors` if it exists.
    #[arg(long = "plugin-dir", visible_alias = "plugin_dir")]
    pub plugin_dirs: Vec<PathBuf>,

    /// Address to listen on.
    #[arg(long, default_value_t = defaults().host)]
    pub host: IpAddr,

    /// Connector calls that may run at once (call slots of the instance pool).
    #[arg(long, env = "FLYTE_CONNECT_MAX_CALLS", default_value_t = defaults().runtime.call_slots as u32, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_concurrent_calls: u32,

    /// Calls that may wait for a free slot; more are refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "FLYTE_CONNECT_MAX_QUEUED", default_value_t = defaults().runtime.max_queued_calls as u32)]
    pub max_queued_calls: u32,

    /// Linear memories one call slot holds; a component needing more takes
    /// several slots per call.
    #[arg(long, env = "FLYTE_CONNECT_POOL_MEMORIES", default_value_t = SlotBudget::default().memories, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub pool_memories_per_slot: u32,

    /// Tables one call slot holds.
    #[arg(long, env = "FLYTE_CONNECT_POOL_TABLES", default_value_t = SlotBudget::default().tables, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub pool_tables_per_slot: u32,

    /// Core module instances one call slot holds.
    #[arg(long, env = "FLYTE_CONNECT_POOL_CORE_INSTANCES", default_value_t = SlotBudget::default().core_instances, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub pool_core_instances_per_slot: u32,

    /// Bytes at the start of each linear memory that resetting a finished
    /// call's instance rewrites in place; the rest is handed back to the
    /// kernel (KiB, MiB, GiB suffixes; 0 hands back everything).
    #[arg(long, env = "FLYTE_CONNECT_POOL_KEEP_RESIDENT", default_value_t = Size(defaults().runtime.memory_keep_resident), value_parser = Size::parse_or_zero)]
    pub pool_keep_resident: Size,

    /// Deadline of one connector call in seconds, unless its manifest sets one.
    #[arg(long, env = "FLYTE_CONNECT_CALL_TIMEOUT", default_value_t = defaults().runtime.default_timeout.as_secs_f64())]
    pub call_timeout: f64,

    /// Idle instances kept per component for plugins with `instance_reuse =
    /// "connection"` [default: as many as the component had calls in flight
    /// at once within the last one to two idle timeouts, at least twice the
    /// worker threads].
    #[arg(long, env = "FLYTE_CONNECT_MAX_IDLE_INSTANCES")]
    pub max_idle_instances: Option<u32>,

    /// Seconds an idle instance is kept for a later call of the same tenant.
    #[arg(
        long,
        env = "FLYTE_CONNECT_IDLE_INSTANCE_TIMEOUT",
        default_value_t = defaults().runtime.reuse.idle_timeout.as_secs_f64()
    )]
    pub idle_instance_timeout: f64,

    /// Calls one instance serves at most, when its plugin opts into reuse.
    #[arg(long, env = "FLYTE_CONNECT_MAX_INSTANCE_REUSE_COUNT", default_value_t = defaults().runtime.reuse.max_calls_per_instance, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_instance_reuse_count: u32,

    /// The memory all connector calls in flight may hold at once: their
    /// instances' linear memory and their requests' bytes. A percentage of
    /// the memory the process may use (its cgroup's limit, else the
    /// machine's), or a size (KiB, MiB, GiB). A call that does not fit waits;
    /// one that never could fails alone with RESOURCE_EXHAUSTED.
    #[arg(long, env = "FLYTE_CONNECT_MEMORY_BUDGET", default_value_t = BudgetSize::default(), value_parser = BudgetSize::parse)]
    pub memory_budget: BudgetSize,

    /// Memory cap of one connector instance in MiB (over all the calls it
    /// serves), unless its manifest sets one.
    #[arg(long, env = "FLYTE_CONNECT_MEMORY_MB", default_value_t = (defaults().runtime.default_memory_bytes >> 20) as u32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub memory_limit_mb: u32,

    /// Largest resource meta a connector may return (bytes; KiB, MiB, GiB suffixes).
    #[arg(long, env = "FLYTE_CONNECT_MAX_RESOURCE_META", default_value_t = Size(defaults().runtime.return_limits.resource_meta), value_parser = Size::parse)]
    pub max_resource_meta_size: Size,

    /// Largest outputs (JSON values and types) a connector may return from one get.
    #[arg(long, env = "FLYTE_CONNECT_MAX_OUTPUTS", default_value_t = Size(defaults().runtime.return_limits.outputs), value_parser = Size::parse)]
    pub max_outputs_size: Size,

    /// Largest custom_info a connector may return from one get.
    #[arg(long, env = "FLYTE_CONNECT_MAX_CUSTOM_INFO", default_value_t = Size(defaults().runtime.return_limits.custom_info), value_parser = Size::parse)]
    pub max_custom_info_size: Size,

    /// Largest page of log lines a connector may return.
    #[arg(long, env = "FLYTE_CONNECT_MAX_LOG_PAGE", default_value_t = Size(defaults().runtime.return_limits.log_page), value_parser = Size::parse)]
    pub max_log_page_size: Size,

    /// Largest metric results a connector may return from one call.
    #[arg(long, env = "FLYTE_CONNECT_MAX_METRICS", default_value_t = Size(defaults().runtime.return_limits.metrics), value_parser = Size::parse)]
    pub max_metrics_size: Size,

    /// Largest gRPC message the server receives or sends.
    #[arg(long, env = "FLYTE_CONNECT_MAX_MESSAGE", default_value_t = Size(defaults().max_message_bytes), value_parser = Size::parse)]
    pub max_message_size: Size,

    /// Seconds between rescans of the plugin folders (file events reload at
    /// once; the rescan catches what events miss).
    #[arg(long, env = "FLYTE_CONNECT_RELOAD_INTERVAL", default_value_t = defaults().reload_interval.unwrap_or_default().as_secs_f64())]
    pub reload_interval: f64,

    /// Do not watch the plugin folders; reload them only on SIGHUP.
    #[arg(long)]
    pub no_reload: bool,

    /// Where compiled components are cached across restarts.
    #[arg(long, env = "FLYTE_CONNECT_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Do not cache compiled components on disk.
    #[arg(long)]
    pub no_cache: bool,

    /// How log lines are written: `text`, or `json` (one object per line).
    #[arg(long, env = "FLYTE_CONNECT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// What the capabilities manifests may grant read of the platform.
    #[command(flatten)]
    pub capabilities: CapabilityArgs,
}

/// A positive number of seconds, at most a day, given to `flag`.
fn positive_seconds(flag: &str, seconds: f64) -> Result<Duration, String> {
    manifest::bounded_seconds(seconds).ok_or_else(|| {
        format!(
            "{flag} {seconds} is not a positive number of seconds up to {}",
            manifest::MAX_SECONDS
        )
    })
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
        let reload_interval = positive_seconds("--reload-interval", self.reload_interval)?;
        let runtime = self.runtime_config()?;
        Ok(ServerConfig {
            host: self.host,
            port: self.port,
            prometheus_port: self.prometheus_port,
            timeout: self.timeout.map(Duration::from_secs),
            worker_threads: self.worker.map(usize::from),
            modules: self.modules,
            plugin_dirs: self.plugin_dirs,
            reload_interval: (!self.no_reload).then_some(reload_interval),
            max_message_bytes: self.max_message_size.0,
            runtime,
            connector_table: self.log_format == LogFormat::Text,
        })
    }

    /// The runtime's sizing and limits these arguments describe.
    fn runtime_config(&self) -> Result<RuntimeConfig, String> {
        let defaults = RuntimeConfig::default();
        let memory_bytes = self.memory_limit_mb as usize * 1024 * 1024;
        Ok(RuntimeConfig {
            call_slots: self.max_concurrent_calls as usize,
            max_queued_calls: self.max_queued_calls as usize,
            slot_budget: SlotBudget {
                memories: self.pool_memories_per_slot,
                tables: self.pool_tables_per_slot,
                core_instances: self.pool_core_instances_per_slot,
            },
            memory_keep_resident: self.pool_keep_resident.0,
            default_timeout: positive_seconds("--call-timeout", self.call_timeout)?,
            default_memory_bytes: memory_bytes,
            max_memory_bytes: defaults.max_memory_bytes.max(memory_bytes),
            return_limits: ReturnLimits {
                resource_meta: self.max_resource_meta_size.0,
                outputs: self.max_outputs_size.0,
                custom_info: self.max_custom_info_size.0,
                log_page: self.max_log_page_size.0,
                metrics: self.max_metrics_size.0,
            },
            reuse: self.reuse_limits()?,
            cache_dir: if self.no_cache {
                None
            } else {
                self.cache_dir.clone().or(defaults.cache_dir)
            },
            capabilities: self
                .capabilities
                .clone()
                .into_config()
                .map_err(|err| err.to_string())?,
            memory_budget: self.memory_budget,
        })
    }

    /// How instances are kept warm, as these arguments ask.
    fn reuse_limits(&self) -> Result<ReuseLimits, String> {
        let workers = self
            .worker
            .map_or_else(ReuseLimits::default_workers, usize::from);
        Ok(ReuseLimits {
            max_idle_per_component: self
                .max_idle_instances
                .map_or(IdleLimit::for_workers(workers), |n| {
                    IdleLimit::Fixed(n as usize)
                }),
            idle_timeout: positive_seconds("--idle-instance-timeout", self.idle_instance_timeout)?,
            max_calls_per_instance: self.max_instance_reuse_count,
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
        assert_eq!(cli.worker, Some(4));
        assert_eq!(cli.timeout, Some(5));
        assert_eq!(cli.modules, ["a", "b.wasm", "c"]);
    }

    #[test]
    fn c0_is_optional_and_kebab_case_works() {
        let cli = parse(&["--prometheus-port", "9999"]);
        assert_eq!(cli.prometheus_port, 9999);
        assert_eq!(cli.port, 8000);
        assert_eq!(cli.worker, None);
    }

    #[test]
    fn run_selects_the_local_loop() {
        let command = Command::parse_args([
            "flyte-connect",
            "run",
            "echo",
            "--template",
            "t.json",
            "--secret",
            "a=b",
            "--secret",
            "c",
        ])
        .expect("valid");
        let Command::Run(args) = command else {
            panic!("not run: {command:?}")
        };
        assert_eq!(args.component, "echo");
        assert_eq!(args.secrets, ["a=b", "c"]);
        assert!(matches!(
            Command::parse_args(["flyte-connect", "c0", "--port", "1"]),
            Ok(Command::Serve(_))
        ));
    }

    #[test]
    fn credential_roots_default_to_etc_secrets_and_no_variables() {
        let roots = |args: &[&str]| {
            parse(args)
                .into_config()
                .map(|config| config.runtime.capabilities.roots)
        };
        assert_eq!(roots(&[]), Ok(crate::runtime::CredentialRoots::default()));
        let given = roots(&[
            "--credentials-dir",
            "/a",
            "--credentials-dir",
            "/b",
            "--credentials-env-prefix",
            "SNOWFLAKE_",
        ])
        .expect("valid");
        assert_eq!(given.dirs, [PathBuf::from("/a"), PathBuf::from("/b")]);
        assert_eq!(given.env_prefixes, ["SNOWFLAKE_"]);
        assert!(roots(&["--credentials-env-prefix", ""]).is_err());
    }

    #[test]
    fn zero_workers_is_rejected() {
        assert!(Cli::parse_args(["flyte-connect", "--worker", "0"]).is_err());
    }

    #[test]
    fn defaults_queue_calls_instead_of_refusing_them() {
        let config = parse(&[]).into_config().expect("valid config");
        assert_eq!(config.runtime.call_slots, 1000);
        assert_eq!(config.runtime.max_queued_calls, 10_000);
        assert_eq!(config.reload_interval, Some(Duration::from_secs(1)));
        assert!(
            parse(&["--no-reload"])
                .into_config()
                .expect("valid")
                .reload_interval
                .is_none()
        );
    }

    #[test]
    fn idle_instances_follow_demand_unless_a_limit_is_given() {
        let reuse = |args: &[&str]| parse(args).into_config().expect("valid").runtime.reuse;
        assert_eq!(
            reuse(&["--worker", "3"]).max_idle_per_component,
            IdleLimit::Demand { at_least: 6 }
        );
        let fixed = reuse(&[
            "--max-idle-instances",
            "2",
            "--idle-instance-timeout",
            "0.5",
        ]);
        assert_eq!(fixed.max_idle_per_component, IdleLimit::Fixed(2));
        assert_eq!(fixed.idle_timeout, Duration::from_millis(500));
        assert_eq!(fixed.max_calls_per_instance, 1000);
        assert!(
            parse(&["--idle-instance-timeout", "0"])
                .into_config()
                .is_err()
        );
        let err = parse(&["--idle-instance-timeout", "1.8e19"])
            .into_config()
            .expect_err("an overflowing timeout");
        assert!(err.contains("--idle-instance-timeout"), "{err}");
    }
}

//! `flyte-connect`: the connector service binary.

use std::{io::IsTerminal, process::ExitCode};

use flyte_connect::{
    ConnectorService,
    cli::{Command, LogFormat, RunArgs},
    local_run::{self, Outcome},
    telemetry::Traces,
};
use tracing_subscriber::{
    EnvFilter, Layer as _, layer::SubscriberExt as _, util::SubscriberInitExt as _,
};

/// `RUST_LOG`, else `info`. The SSH library's debug lines (protocol
/// detail, the hosts' keys) stay off unless `RUST_LOG` names `russh`.
fn log_filter() -> EnvFilter {
    let asked = std::env::var("RUST_LOG").unwrap_or_default();
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if !asked.contains("russh") {
        for quiet in ["russh=info", "russh_sftp=info"] {
            if let Ok(directive) = quiet.parse() {
                filter = filter.add_directive(directive);
            }
        }
    }
    filter
}

fn main() -> ExitCode {
    let command = match Command::parse_args(std::env::args_os()) {
        Ok(command) => command,
        Err(err) => err.exit(),
    };
    // Traces only when serving, and only as the OTEL_* variables ask.
    let traces = match &command {
        Command::Serve(_) => match Traces::from_env() {
            Ok(traces) => traces,
            Err(err) => {
                eprintln!("error: {err:#}");
                return ExitCode::from(2);
            }
        },
        Command::Run(_) => None,
    };
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match command.log_format() {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).boxed(),
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(log_filter())
        .with(logs.with_filter(tracing_subscriber::filter::filter_fn(
            flyte_connect::telemetry::logged,
        )))
        .with(traces.as_ref().map(Traces::layer))
        .init();
    let cli = match command {
        Command::Serve(cli) => cli,
        Command::Run(args) => return run(*args),
    };
    let served = serve(*cli);
    if let Some(traces) = traces {
        traces.shutdown();
    }
    served
}

/// Serves until stopped: 0 when it stopped as asked.
fn serve(cli: flyte_connect::cli::Cli) -> ExitCode {
    let config = match cli.into_config() {
        Ok(config) => config,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    match ConnectorService::new(config).run_blocking() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `flyte-connect run`: 0 when the task succeeded, 1 when it (or the
/// connector) failed, 130 when Ctrl-C cancelled it, 2 for bad arguments.
fn run(args: RunArgs) -> ExitCode {
    let options = match args.into_options() {
        Ok(options) => options,
        Err(err) => {
            eprintln!("error: {err:#}");
            return ExitCode::from(2);
        }
    };
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| {
            runtime.block_on(local_run::run(options, &mut std::io::stdout().lock()))
        });
    match outcome {
        Ok(Outcome::Succeeded) => ExitCode::SUCCESS,
        Ok(Outcome::Failed) => ExitCode::FAILURE,
        Ok(Outcome::Interrupted) => ExitCode::from(130),
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

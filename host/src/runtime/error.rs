//! Why a component could not be loaded ([`LoadError`]).

use super::capabilities::GrantError;
use crate::connector::ConnectorError;

/// Why a component could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Not a component wasmtime can compile.
    #[error("cannot compile {path}: {message}")]
    Compile {
        /// The file.
        path: String,
        /// wasmtime's explanation.
        message: String,
    },
    /// The component imports something the sandbox does not provide, or does
    /// not export the `flyte:connector/plugin` world.
    #[error("{path} is not a flyte:connector/plugin component: {message}")]
    Link {
        /// The file.
        path: String,
        /// What is missing.
        message: String,
    },
    /// The component was built against a major version of the contract
    /// (`flyte:connector@MAJOR.x`) this server does not serve.
    #[error(
        "{path} was built against flyte:connector@{version}; this server serves \
         flyte:connector@{served_major}.x: rebuild it with the current SDK"
    )]
    Contract {
        /// The file.
        path: String,
        /// The contract version it was built against.
        version: String,
        /// The major version this server serves.
        served_major: &'static str,
    },
    /// The component's `metadata` call failed.
    #[error("{path}: metadata call failed: {source}")]
    Metadata {
        /// The file.
        path: String,
        /// What went wrong.
        source: ConnectorError,
    },
    /// A section of the manifest cannot be granted: an unknown key, an
    /// invalid value, a file it names that cannot or may not be read.
    #[error("invalid manifest {path}: {source}")]
    Grant {
        /// The manifest's path.
        path: String,
        /// What is wrong.
        source: GrantError,
    },
    /// The manifest, or the component itself, asks for more than the server allows.
    #[error("{path}: {message}")]
    Limits {
        /// The file.
        path: String,
        /// What is out of range.
        message: String,
    },
}

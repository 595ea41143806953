//! Why an SSH operation failed ([`SshError`]), as the guest sees it.
//!
//! Messages name the destination, the user, a path or a key's fingerprint,
//! never a private key, a passphrase, known-hosts data or a command line
//! (which a connector may build from secrets).

/// Why an SSH operation failed; each kind is one case of the WIT `error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(in crate::runtime::capabilities) enum SshError {
    /// The manifest does not allow the host, port or address.
    #[error("{0}")]
    NotAllowed(String),
    /// The host key is unknown, does not match, or is revoked.
    #[error("{0}")]
    HostKey(String),
    /// The server refused the key.
    #[error("{0}")]
    Authentication(String),
    /// Unreachable, or the connection broke.
    #[error("{0}")]
    Unreachable(String),
    /// Past the operation's timeout or the call's deadline.
    #[error("{0}")]
    Timeout(String),
    /// The server failed the operation.
    #[error("{0}")]
    Remote(String),
    /// An argument that cannot be used.
    #[error("{0}")]
    Invalid(String),
}

impl SshError {
    /// The `outcome` label of the operations metric.
    pub(super) fn outcome(&self) -> &'static str {
        match self {
            Self::NotAllowed(_) => "not_allowed",
            Self::HostKey(_) => "host_key",
            Self::Authentication(_) => "authentication",
            Self::Unreachable(_) => "unreachable",
            Self::Timeout(_) => "timeout",
            Self::Remote(_) => "remote",
            Self::Invalid(_) => "invalid",
        }
    }
}

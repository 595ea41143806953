//! [`ConfigError`]: a command-line flag's value a capability, or what
//! manifests may read of the pod, cannot work with. Apart from the trait, so
//! that `credential_roots` (which the trait's load scope uses) reports its
//! flags' errors without importing the trait's module.

/// A flag's value no capability can work with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{flag}: {reason}")]
pub struct ConfigError {
    /// The flag, as written on the command line.
    pub flag: &'static str,
    /// What is wrong with its value.
    pub reason: String,
}

//! Where the capabilities that open connections (outbound HTTP, SSH) may
//! connect: host rules ([`rules`]), and the addresses a name resolves to
//! judged after resolution ([`address`]). Both capabilities judge their
//! destinations the same way, each against its own list of rules.

mod address;
mod rules;

pub(super) use self::{
    address::{AddressPolicy, Resolved},
    rules::{HostRule, Protocol},
};

/// A destination as rules and address checks see it.
pub(super) trait Endpoint {
    /// Which list of rules admits it.
    fn protocol(&self) -> Protocol;
    /// The scheme rules match: `http`, `https` or `ssh`.
    fn scheme(&self) -> &'static str;
    /// The host, lower case, without brackets or a trailing dot.
    fn host(&self) -> &str;
    /// The port.
    fn port(&self) -> u16;
    /// What a refusal names, e.g. `outbound HTTP to https://host:443`.
    fn described(&self) -> String;
    /// The rule that would name address `ip` (as a rule writes it) for this
    /// destination, e.g. `https://10.0.0.1:443`.
    fn rule_naming(&self, ip: &str) -> String;
}

/// `host:port`, an IPv6 host in brackets.
pub(super) fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

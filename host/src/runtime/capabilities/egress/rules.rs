//! Host rules (`allowed_hosts`, `[ssh] allowed_hosts`), parsed once when a
//! plugin is loaded.
//!
//! The syntax follows Spin's `allowed_outbound_hosts`. For outbound HTTP:
//!
//! | rule | allows |
//! | --- | --- |
//! | `api.example.com` | `https://api.example.com:443` |
//! | `*.example.com` | https on 443 to any subdomain of `example.com` |
//! | `https://api.example.com:8443` | that port only |
//! | `https://api.example.com:*` | any port |
//! | `http://127.0.0.1:8080` | plain http, only where a rule says `http://` |
//! | `*://api.example.com` | http on 80 and https on 443 |
//! | `https://*` | https on 443 to any host |
//! | `https://10.0.0.0/8:*` | https to any address of that range, any port |
//!
//! For SSH the scheme is `ssh` (written or not) and the default port 22:
//! `login.example.com`, `login.example.com:2222`, `*.hpc.example.com`,
//! `ssh://10.0.0.0/8:*`.
//!
//! Rules admit a request by its name; the address a name resolves to is
//! judged too (see `address`): an internal address (loopback, private,
//! link-local, ...) is reached only where a rule names that address or its
//! range ([`HostRule::allows_address`]), or names the host exactly, as the
//! operator wrote it out ([`HostRule::names_host`]), never by a wildcard.

use std::{fmt, net::IpAddr};

use ipnet::IpNet;

/// Which schemes a rule allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SchemeRule {
    Https,
    Http,
    /// http or https.
    Any,
    Ssh,
}

/// What a list of rules admits connections for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `allowed_hosts`: http and https.
    Http,
    /// `[ssh] allowed_hosts`.
    Ssh,
}

impl Protocol {
    /// The manifest key its rules are written under.
    pub fn rules_key(self) -> &'static str {
        match self {
            Self::Http => "allowed_hosts",
            Self::Ssh => "ssh.allowed_hosts",
        }
    }

    fn examples(self) -> &'static str {
        match self {
            Self::Http => {
                "`api.example.com`, `https://*.example.com`, `http://127.0.0.1:8080` or \
                 `https://api.example.com:*`"
            }
            Self::Ssh => "`login.example.com`, `login.example.com:2222` or `*.hpc.example.com`",
        }
    }
}

/// Which hosts a rule allows.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// Exactly this host name (lowercase).
    Exact(String),
    /// Exactly this address (IPv4-mapped IPv6 forms as IPv4).
    Address(IpAddr),
    /// Any address of this range.
    Network(IpNet),
    /// Any subdomain of this suffix (at least one label before it).
    SubdomainsOf(String),
    /// Any host.
    Any,
}

/// Which ports a rule allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PortRule {
    /// The scheme's default: 443 for https, 80 for http, 22 for ssh.
    Default,
    Exact(u16),
    Any,
}

/// One parsed host rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRule {
    text: String,
    scheme: SchemeRule,
    host: HostPattern,
    port: PortRule,
}

/// A rule that cannot be parsed, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRule {
    /// What the rule was for.
    pub protocol: Protocol,
    /// The rule as written.
    pub rule: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for InvalidRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} entry {:?} is invalid: {} (write e.g. {})",
            self.protocol.rules_key(),
            self.rule,
            self.reason,
            self.protocol.examples()
        )
    }
}

impl HostRule {
    /// Parses one rule of `allowed_hosts` (outbound HTTP).
    pub fn parse(text: &str) -> Result<Self, InvalidRule> {
        Self::parse_for(Protocol::Http, text)
    }

    /// Parses one rule of `protocol`'s list.
    pub fn parse_for(protocol: Protocol, text: &str) -> Result<Self, InvalidRule> {
        let invalid = |reason: &str| InvalidRule {
            protocol,
            rule: text.to_owned(),
            reason: reason.to_owned(),
        };
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(invalid("it is empty"));
        }
        let (scheme, rest) = match (protocol, trimmed.split_once("://")) {
            (Protocol::Http, Some((scheme, rest))) => {
                let scheme = match scheme.to_ascii_lowercase().as_str() {
                    "https" => SchemeRule::Https,
                    "http" => SchemeRule::Http,
                    "*" => SchemeRule::Any,
                    _ => return Err(invalid("the scheme must be https, http or *")),
                };
                (scheme, rest)
            }
            (Protocol::Http, None) => (SchemeRule::Https, trimmed),
            (Protocol::Ssh, Some((scheme, rest))) => {
                if !scheme.eq_ignore_ascii_case("ssh") {
                    return Err(invalid("the scheme, if any, must be ssh"));
                }
                (SchemeRule::Ssh, rest)
            }
            (Protocol::Ssh, None) => (SchemeRule::Ssh, trimmed),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let only_host_and_port = || invalid("only a host and a port may follow the scheme");
        if rest.contains(['?', '#', '@']) || rest.chars().any(char::is_whitespace) {
            return Err(only_host_and_port());
        }
        let (host, port) = split_host_port(rest).map_err(|reason| invalid(&reason))?;
        if port.is_some_and(|port| port.contains('/')) {
            return Err(only_host_and_port());
        }
        let port = match port {
            None => PortRule::Default,
            Some("*") => PortRule::Any,
            Some(port) => match port.parse::<u16>() {
                Ok(port) if port > 0 => PortRule::Exact(port),
                _ => return Err(invalid("the port must be a number from 1 to 65535, or *")),
            },
        };
        let host = host.to_ascii_lowercase();
        let host = if host == "*" {
            HostPattern::Any
        } else if let Some((address, _)) = host.split_once('/') {
            match host.parse::<IpNet>() {
                Ok(net) => HostPattern::Network(net.trunc()),
                Err(_) if address.parse::<IpAddr>().is_ok() => {
                    return Err(invalid(
                        "not an address range (write e.g. 10.0.0.0/8 or [fd00::/8])",
                    ));
                }
                Err(_) => return Err(only_host_and_port()),
            }
        } else if let Ok(ip) = host.parse::<IpAddr>() {
            HostPattern::Address(ip.to_canonical())
        } else if let Some(suffix) = host.strip_prefix("*.") {
            if !valid_host(suffix) {
                return Err(invalid("the part after `*.` is not a host name"));
            }
            HostPattern::SubdomainsOf(suffix.to_owned())
        } else if valid_host(&host) {
            HostPattern::Exact(host)
        } else {
            return Err(invalid("not a host name or IP address"));
        };
        Ok(Self {
            text: text.to_owned(),
            scheme,
            host,
            port,
        })
    }

    /// Whether a connection to `scheme://host:port` is allowed by this rule.
    /// `scheme` is `http`, `https` or `ssh`, `host` lowercase without a
    /// trailing dot.
    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        self.allows_endpoint(scheme, port)
            && match &self.host {
                HostPattern::Exact(allowed) => allowed == host,
                HostPattern::Address(allowed) => host
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| ip.to_canonical() == *allowed),
                HostPattern::Network(net) => host
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| net.contains(&ip.to_canonical())),
                HostPattern::SubdomainsOf(suffix) => host
                    .strip_suffix(suffix.as_str())
                    .is_some_and(|prefix| prefix.len() > 1 && prefix.ends_with('.')),
                HostPattern::Any => true,
            }
    }

    /// Whether this rule names host `host` exactly, as a name (not an
    /// address, not a wildcard), for `scheme` and `port`: the operator wrote
    /// it out, so whatever it resolves to is theirs to allow.
    pub fn names_host(&self, scheme: &str, host: &str, port: u16) -> bool {
        matches!(&self.host, HostPattern::Exact(allowed) if allowed == host)
            && self.allows_endpoint(scheme, port)
    }

    /// Whether this rule names address `ip` (an IP literal or a range that
    /// holds it) for `scheme` and `port`.
    pub fn allows_address(&self, scheme: &str, ip: IpAddr, port: u16) -> bool {
        let ip = ip.to_canonical();
        self.allows_endpoint(scheme, port)
            && match &self.host {
                HostPattern::Address(allowed) => *allowed == ip,
                HostPattern::Network(net) => net.contains(&ip),
                _ => false,
            }
    }

    /// Whether the scheme and port are this rule's.
    fn allows_endpoint(&self, scheme: &str, port: u16) -> bool {
        let default_port = match (self.scheme, scheme) {
            (SchemeRule::Https | SchemeRule::Any, "https") => 443,
            (SchemeRule::Http | SchemeRule::Any, "http") => 80,
            (SchemeRule::Ssh, "ssh") => 22,
            _ => return false,
        };
        match self.port {
            PortRule::Default => port == default_port,
            PortRule::Exact(allowed) => port == allowed,
            PortRule::Any => true,
        }
    }
}

impl fmt::Display for HostRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Splits `host[:port]`, where the host may be a bracketed IPv6 literal.
fn split_host_port(text: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| "an IPv6 address lacks its closing `]`".to_owned())?;
        return match after {
            "" => Ok((host, None)),
            _ => after
                .strip_prefix(':')
                .map(|port| (host, Some(port)))
                .ok_or_else(|| "only `:PORT` may follow an IPv6 address".to_owned()),
        };
    }
    match text.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => Ok((host, Some(port))),
        Some(_) => Err("an IPv6 address must be in brackets: [::1]".to_owned()),
        None => Ok((text, None)),
    }
}

/// A DNS name (letters, digits, `-`, `_` and dots) or an IP address.
fn valid_host(host: &str) -> bool {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> HostRule {
        HostRule::parse(text).unwrap_or_else(|err| panic!("{err}"))
    }

    #[test]
    fn a_bare_host_means_https_on_443() {
        let r = rule("API.example.com");
        assert!(r.allows("https", "api.example.com", 443));
        assert!(!r.allows("http", "api.example.com", 80));
        assert!(!r.allows("https", "api.example.com", 8443));
        assert!(!r.allows("https", "example.com", 443));
    }

    #[test]
    fn wildcards_match_subdomains_only() {
        let r = rule("https://*.cloud.databricks.com");
        assert!(r.allows("https", "a.cloud.databricks.com", 443));
        assert!(r.allows("https", "a.b.cloud.databricks.com", 443));
        assert!(!r.allows("https", "cloud.databricks.com", 443));
        assert!(!r.allows("https", "evilcloud.databricks.com", 443));
        assert!(rule("https://*").allows("https", "anything.org", 443));
    }

    #[test]
    fn plain_http_and_ports_only_where_a_rule_says_so() {
        let r = rule("http://127.0.0.1:8080");
        assert!(r.allows("http", "127.0.0.1", 8080));
        assert!(!r.allows("https", "127.0.0.1", 8080));
        assert!(!r.allows("http", "127.0.0.1", 8081));
        let any_port = rule("https://api.example.com:*");
        assert!(any_port.allows("https", "api.example.com", 9999));
        assert!(!any_port.allows("http", "api.example.com", 9999));
        let any_scheme = rule("*://api.example.com");
        assert!(any_scheme.allows("http", "api.example.com", 80));
        assert!(any_scheme.allows("https", "api.example.com", 443));
        assert!(!any_scheme.allows("http", "api.example.com", 443));
        let v6 = rule("http://[::1]:9000");
        assert!(v6.allows("http", "::1", 9000));
    }

    #[test]
    fn addresses_and_ranges_are_named_by_ip_rules_only() {
        let range = rule("https://10.0.0.0/8:*");
        assert!(range.allows("https", "10.1.2.3", 8443));
        assert!(!range.allows("https", "11.0.0.1", 443));
        assert!(!range.allows("https", "ten.example.com", 443));
        assert!(range.allows_address("https", "10.9.9.9".parse().expect("ip"), 1));
        assert!(!range.allows_address("http", "10.9.9.9".parse().expect("ip"), 80));
        let v6 = rule("https://[fd00::/8]:443");
        assert!(v6.allows_address("https", "fd12::1".parse().expect("ip"), 443));
        let loopback = rule("http://127.0.0.1:8080");
        assert!(loopback.allows_address("http", "127.0.0.1".parse().expect("ip"), 8080));
        // An IPv4-mapped IPv6 address is its IPv4 address.
        assert!(loopback.allows_address("http", "::ffff:127.0.0.1".parse().expect("ip"), 8080));
        assert!(loopback.allows("http", "::ffff:127.0.0.1", 8080));
        assert!(!loopback.names_host("http", "127.0.0.1", 8080));
        let named = rule("http://metadata.google.internal");
        assert!(named.names_host("http", "metadata.google.internal", 80));
        assert!(!named.names_host("http", "metadata.google.internal", 8080));
        assert!(!rule("https://*").names_host("https", "x.example.com", 443));
        assert!(!rule("*.example.com").names_host("https", "a.example.com", 443));
    }

    #[test]
    fn invalid_rules_name_themselves() {
        for bad in [
            "",
            "ftp://example.com",
            "https://example.com/path",
            "https://example.com:0",
            "https://example.com:99999",
            "https://exa mple.com",
            "https://user@example.com",
            "*.",
            "::1",
            "https://[::1",
            "https://10.0.0.0/33",
            "https://10.0.0.0/8/x",
            "https://example.com:443/x",
        ] {
            let err = HostRule::parse(bad).expect_err(bad);
            assert_eq!(err.rule, bad);
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    fn ssh(text: &str) -> HostRule {
        HostRule::parse_for(Protocol::Ssh, text).expect("an ssh rule")
    }

    #[test]
    fn ssh_rules_mean_port_22_and_admit_ssh_only() {
        let login = ssh("login.example.com");
        assert!(login.allows("ssh", "login.example.com", 22));
        assert!(!login.allows("ssh", "login.example.com", 2222));
        assert!(!login.allows("https", "login.example.com", 443));
        assert!(login.names_host("ssh", "login.example.com", 22));
        assert!(ssh("ssh://login.example.com:2222").allows("ssh", "login.example.com", 2222));
        let cluster = ssh("*.hpc.example.com:*");
        assert!(cluster.allows("ssh", "node1.hpc.example.com", 2200));
        assert!(!cluster.allows("ssh", "hpc.example.com", 22));
        assert!(ssh("10.0.0.0/8:*").allows_address("ssh", "10.1.2.3".parse().expect("ip"), 22));
        // An http rule admits no SSH, and the other way round.
        assert!(!rule("https://*:*").allows("ssh", "login.example.com", 22));
        let err =
            HostRule::parse_for(Protocol::Ssh, "https://login.example.com").expect_err("scheme");
        assert!(
            err.to_string()
                .starts_with("ssh.allowed_hosts entry \"https://login.example.com\""),
            "{err}"
        );
    }
}

//! `allowed_hosts` rules, parsed once when a plugin is loaded.
//!
//! The syntax follows Spin's `allowed_outbound_hosts`:
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

use std::fmt;

/// Which schemes a rule allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SchemeRule {
    Https,
    Http,
    Any,
}

/// Which hosts a rule allows.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// Exactly this host (lowercase, IPv6 literals without brackets).
    Exact(String),
    /// Any subdomain of this suffix (at least one label before it).
    SubdomainsOf(String),
    /// Any host.
    Any,
}

/// Which ports a rule allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PortRule {
    /// The scheme's default: 443 for https, 80 for http.
    Default,
    Exact(u16),
    Any,
}

/// One parsed `allowed_hosts` rule.
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
    /// The rule as written.
    pub rule: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for InvalidRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "allowed_hosts entry {:?} is invalid: {} (write e.g. `api.example.com`, \
             `https://*.example.com`, `http://127.0.0.1:8080` or `https://api.example.com:*`)",
            self.rule, self.reason
        )
    }
}

impl HostRule {
    /// Parses one rule.
    pub fn parse(text: &str) -> Result<Self, InvalidRule> {
        let invalid = |reason: &str| InvalidRule {
            rule: text.to_owned(),
            reason: reason.to_owned(),
        };
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(invalid("it is empty"));
        }
        let (scheme, rest) = match trimmed.split_once("://") {
            Some((scheme, rest)) => {
                let scheme = match scheme.to_ascii_lowercase().as_str() {
                    "https" => SchemeRule::Https,
                    "http" => SchemeRule::Http,
                    "*" => SchemeRule::Any,
                    _ => return Err(invalid("the scheme must be https, http or *")),
                };
                (scheme, rest)
            }
            None => (SchemeRule::Https, trimmed),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) || rest.chars().any(char::is_whitespace) {
            return Err(invalid("only a host and a port may follow the scheme"));
        }
        let (host, port) = split_host_port(rest).map_err(|reason| invalid(&reason))?;
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

    /// Whether a request to `scheme://host:port` is allowed by this rule.
    /// `scheme` is `http` or `https`, `host` lowercase without a trailing dot.
    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        let https = match (self.scheme, scheme) {
            (SchemeRule::Https | SchemeRule::Any, "https") => true,
            (SchemeRule::Http | SchemeRule::Any, "http") => false,
            _ => return false,
        };
        let port_ok = match self.port {
            PortRule::Default => port == if https { 443 } else { 80 },
            PortRule::Exact(allowed) => port == allowed,
            PortRule::Any => true,
        };
        port_ok
            && match &self.host {
                HostPattern::Exact(allowed) => allowed == host,
                HostPattern::SubdomainsOf(suffix) => host
                    .strip_suffix(suffix.as_str())
                    .is_some_and(|prefix| prefix.len() > 1 && prefix.ends_with('.')),
                HostPattern::Any => true,
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
        ] {
            let err = HostRule::parse(bad).expect_err(bad);
            assert_eq!(err.rule, bad);
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }
}

//! Egress judged by the address a connection reaches, not only by the name
//! a rule admitted: a wildcard rule (`https://*`, `*.example.com`) with a
//! host taken from a task template would otherwise reach the pod's own
//! network — loopback, the cluster's private ranges, the cloud metadata
//! service on a link-local address (node credentials) — and a name whose
//! DNS a tenant controls could resolve to one of them after the name was
//! checked.
//!
//! Every address a connection would be made to is judged after resolution
//! ([`AddressPolicy::resolve`]), each address of a multi-address answer
//! alike, and only those allowed are tried. An internal address
//! ([`internal`]) is allowed only where a rule names it or its range
//! (`http://127.0.0.1:8080`, `https://10.0.0.0/8:*`), or where a rule names
//! the host exactly (`http://metadata.google.internal`), as the operator
//! wrote it out: then whatever it resolves to is the operator's choice.
//! Through a proxy the target is judged the same way, and the proxy is asked
//! for the address that was judged, so it cannot resolve the name anew.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use super::{Endpoint, rules::HostRule};

/// Why `ip` is internal to the pod's network, in words; `None` for a
/// public address. IPv4-mapped, NAT64 and 6to4 forms of an IPv4 address
/// are judged as that address.
pub(in crate::runtime::capabilities) fn internal(ip: IpAddr) -> Option<&'static str> {
    match ip.to_canonical() {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => internal_v6(v6),
    }
}

fn internal_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b) {
        _ if ip.is_unspecified() || a == 0 => "an unspecified address",
        _ if ip.is_loopback() => "a loopback address",
        _ if ip.is_private() => "a private address (RFC 1918)",
        _ if ip.is_link_local() => "a link-local address (where cloud metadata services answer)",
        (100, 64..=127) => "a shared address (RFC 6598, carrier-grade NAT)",
        (192, 0) if c == 0 => "an IETF protocol address (RFC 6890)",
        (198, 18..=19) => "a benchmarking address (RFC 2544)",
        _ if ip.is_broadcast() => "the broadcast address",
        _ if ip.is_multicast() => "a multicast address",
        (240..=255, _) => "a reserved address",
        _ => return None,
    })
}

fn internal_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let segments = ip.segments();
    let embedded = |high: u16, low: u16| {
        let [h1, h2] = high.to_be_bytes();
        let [l1, l2] = low.to_be_bytes();
        Ipv4Addr::new(h1, h2, l1, l2)
    };
    Some(match segments {
        _ if ip.is_unspecified() => "an unspecified address",
        _ if ip.is_loopback() => "a loopback address",
        // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) reach an IPv4 address.
        [0x64, 0xff9b, 0, 0, 0, 0, high, low] => return internal_v4(embedded(high, low)),
        [0x2002, high, low, ..] => return internal_v4(embedded(high, low)),
        // IPv4-compatible addresses (::/96), deprecated.
        [0, 0, 0, 0, 0, 0, _, _] => "an IPv4-compatible address (deprecated)",
        [first, ..] if first & 0xfe00 == 0xfc00 => "a unique-local address (fc00::/7)",
        [first, ..] if first & 0xffc0 == 0xfe80 => "a link-local address",
        [first, ..] if first & 0xffc0 == 0xfec0 => "a site-local address (deprecated)",
        [first, ..] if first & 0xff00 == 0xff00 => "a multicast address",
        _ => return None,
    })
}

/// One plugin's rules, as they judge addresses.
#[derive(Debug, Clone)]
pub(in crate::runtime::capabilities) struct AddressPolicy {
    rules: Arc<[HostRule]>,
    /// Every address is reachable: for connections to endpoints only the
    /// operator names (object stores).
    any: bool,
}

/// An address a target resolved to that may not be reached, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::runtime::capabilities) struct Refused {
    pub(in crate::runtime::capabilities) address: IpAddr,
    pub(in crate::runtime::capabilities) why: &'static str,
}

impl Refused {
    /// The message a call fails with: the host, the address and why.
    pub(in crate::runtime::capabilities) fn message(&self, target: &impl Endpoint) -> String {
        let host = target.host();
        let reached = if host.parse::<IpAddr>().is_ok() {
            format!("{host} is {}", self.why)
        } else {
            format!("{host} resolves to {}, {}", self.address, self.why)
        };
        format!(
            "{} refused: {reached}; the plugin's {} must name the address or its range \
             (e.g. `{}`) or the host itself, not by a wildcard",
            target.described(),
            target.protocol().rules_key(),
            target.rule_naming(&shown_ip(self.address)),
        )
    }
}

/// An address as a rule writes it (IPv6 in brackets).
fn shown_ip(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// What resolving a target gave.
#[derive(Debug)]
pub(in crate::runtime::capabilities) enum Resolved {
    /// Addresses to try, in order.
    Reach(Vec<SocketAddr>),
    /// Every address was refused; the first, for the message.
    Refused(Refused),
}

impl AddressPolicy {
    pub(in crate::runtime::capabilities) fn new(rules: Arc<[HostRule]>) -> Self {
        Self { rules, any: false }
    }

    /// A policy that reaches every address: for the host's own connections
    /// to endpoints the operator configured, which no request chooses.
    pub(in crate::runtime::capabilities) fn any() -> Self {
        Self {
            rules: Arc::new([]),
            any: true,
        }
    }

    /// Whether `target` is judged by its addresses: not when a rule names
    /// its host exactly.
    pub(in crate::runtime::capabilities) fn checks(&self, target: &impl Endpoint) -> bool {
        !self.any
            && !self
                .rules
                .iter()
                .any(|rule| rule.names_host(target.scheme(), target.host(), target.port()))
    }

    /// Whether `target` may reach `ip`: a public address, or one a rule names.
    pub(in crate::runtime::capabilities) fn permits(
        &self,
        target: &impl Endpoint,
        ip: IpAddr,
    ) -> Result<(), Refused> {
        match internal(ip) {
            None => Ok(()),
            Some(_)
                if self
                    .rules
                    .iter()
                    .any(|rule| rule.allows_address(target.scheme(), ip, target.port())) =>
            {
                Ok(())
            }
            Some(why) => Err(Refused {
                address: ip.to_canonical(),
                why,
            }),
        }
    }

    /// `addresses` (what `target`'s host resolved to) that it may reach.
    pub(in crate::runtime::capabilities) fn judge(
        &self,
        target: &impl Endpoint,
        addresses: impl IntoIterator<Item = SocketAddr>,
    ) -> Resolved {
        let check = self.checks(target);
        let mut reach = Vec::new();
        let mut first_refused = None;
        for address in addresses {
            match (check, self.permits(target, address.ip())) {
                (true, Err(refused)) => {
                    first_refused.get_or_insert(refused);
                }
                _ => reach.push(address),
            }
        }
        match (reach.is_empty(), first_refused) {
            (true, Some(refused)) => Resolved::Refused(refused),
            _ => Resolved::Reach(reach),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::capabilities::egress::Protocol;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn internal_addresses_in_every_form_are_named() {
        for (address, why) in [
            ("127.0.0.1", "loopback"),
            ("127.8.9.10", "loopback"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("10.0.0.1", "private"),
            ("172.16.5.4", "private"),
            ("192.168.1.1", "private"),
            ("::ffff:10.0.0.1", "private"),
            ("169.254.169.254", "link-local"),
            ("::ffff:169.254.169.254", "link-local"),
            ("fe80::1", "link-local"),
            ("fd00:ec2::254", "unique-local"),
            ("0.0.0.0", "unspecified"),
            ("::", "unspecified"),
            ("100.100.100.200", "shared"),
            ("224.0.0.1", "multicast"),
            ("ff02::1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("2002:7f00:1::", "loopback"),
            ("::7f00:1", "IPv4-compatible"),
        ] {
            let shown = internal(ip(address)).unwrap_or("public");
            assert!(shown.contains(why), "{address}: {shown}");
        }
        for public in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "172.32.0.1"] {
            assert_eq!(internal(ip(public)), None, "{public}");
        }
    }

    fn policy(rules: &[&str]) -> AddressPolicy {
        let rules: Vec<HostRule> = rules
            .iter()
            .map(|r| HostRule::parse(r).expect("a rule"))
            .collect();
        AddressPolicy::new(rules.into())
    }

    /// An http(s) destination, as outbound HTTP describes it.
    struct Http {
        https: bool,
        host: String,
        port: u16,
    }

    impl Endpoint for Http {
        fn protocol(&self) -> Protocol {
            Protocol::Http
        }
        fn scheme(&self) -> &'static str {
            if self.https { "https" } else { "http" }
        }
        fn host(&self) -> &str {
            &self.host
        }
        fn port(&self) -> u16 {
            self.port
        }
        fn described(&self) -> String {
            format!(
                "outbound HTTP to {}://{}:{}",
                self.scheme(),
                self.host,
                self.port
            )
        }
        fn rule_naming(&self, ip: &str) -> String {
            format!("{}://{ip}:{}", self.scheme(), self.port)
        }
    }

    fn target(uri: &str) -> Http {
        let uri: http::Uri = uri.parse().expect("a URI");
        let https = uri.scheme_str() == Some("https");
        Http {
            https,
            host: uri
                .host()
                .expect("a host")
                .trim_matches(['[', ']'])
                .to_owned(),
            port: uri.port_u16().unwrap_or(if https { 443 } else { 80 }),
        }
    }

    fn at(addresses: &[&str], port: u16) -> Vec<SocketAddr> {
        addresses
            .iter()
            .map(|a| SocketAddr::new(ip(a), port))
            .collect()
    }

    #[test]
    fn wildcards_reach_public_addresses_only() {
        let wildcard = policy(&["https://*", "http://*:*"]);
        let metadata = target("http://169.254.169.254/latest/meta-data");
        let Resolved::Refused(refused) = wildcard.judge(&metadata, at(&["169.254.169.254"], 80))
        else {
            panic!("the metadata service was reached");
        };
        let message = refused.message(&metadata);
        assert!(
            message.contains("169.254.169.254 is a link-local address"),
            "{message}"
        );
        let rebound = target("https://rebind.example.com/");
        let Resolved::Refused(refused) = wildcard.judge(&rebound, at(&["10.0.0.1"], 443)) else {
            panic!("a private address was reached");
        };
        assert!(
            refused
                .message(&rebound)
                .contains("rebind.example.com resolves to 10.0.0.1, a private address"),
            "{}",
            refused.message(&rebound)
        );
        // Only the public addresses of a mixed answer are tried.
        let Resolved::Reach(reach) =
            wildcard.judge(&rebound, at(&["10.0.0.1", "93.184.216.34"], 443))
        else {
            panic!("the public address was refused");
        };
        assert_eq!(reach, at(&["93.184.216.34"], 443));
    }

    #[test]
    fn rules_naming_an_address_a_range_or_the_host_exactly_reach_it() {
        let rules = policy(&[
            "http://*:*",
            "http://127.0.0.1:8080",
            "https://10.0.0.0/8:*",
            "http://metadata.google.internal",
        ]);
        let loopback = target("http://127.0.0.1:8080/");
        assert!(matches!(
            rules.judge(&loopback, at(&["127.0.0.1"], 8080)),
            Resolved::Reach(_)
        ));
        let other_port = target("http://127.0.0.1:8081/");
        assert!(matches!(
            rules.judge(&other_port, at(&["127.0.0.1"], 8081)),
            Resolved::Refused(_)
        ));
        let in_range = target("https://warehouse.internal/");
        assert!(matches!(
            rules.judge(&in_range, at(&["10.20.30.40"], 443)),
            Resolved::Reach(_)
        ));
        let named = target("http://metadata.google.internal/computeMetadata/v1/");
        assert!(!rules.checks(&named));
        assert!(matches!(
            rules.judge(&named, at(&["169.254.169.254"], 80)),
            Resolved::Reach(_)
        ));
        let mapped = target("http://[::ffff:127.0.0.1]:9/");
        assert!(matches!(
            rules.judge(&mapped, at(&["::ffff:127.0.0.1"], 9)),
            Resolved::Refused(_)
        ));
    }
}

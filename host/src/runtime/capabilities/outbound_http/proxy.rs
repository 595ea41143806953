//! Proxies by the conventions every HTTP client follows, read from the
//! server's environment at start: `HTTPS_PROXY` for https targets,
//! `HTTP_PROXY` for http ones, `ALL_PROXY` for either when its own is not
//! set, and `NO_PROXY` for the targets that go direct (each upper or lower
//! case, upper first).
//!
//! `NO_PROXY` is a comma-separated list of `*` (everything), host names
//! (`example.com` and `.example.com` both match it and its subdomains),
//! IP addresses, CIDR ranges (`10.0.0.0/8`), each optionally with `:PORT`
//! to match that port only. An https target goes through an HTTP `CONNECT`
//! tunnel; an http target is sent to the proxy in absolute form. Credentials
//! in a proxy URL (`http://user:pass@proxy:3128`) are sent as
//! `Proxy-Authorization: Basic` and appear nowhere else: [`Proxy`]'s
//! `shown` name and `Debug` leave them out.

use std::net::IpAddr;

use base64::Engine as _;
use http::HeaderValue;
use ipnet::IpNet;

/// A proxy to send requests through.
#[derive(Clone)]
pub(in crate::runtime) struct Proxy {
    /// `host:port` to connect to.
    pub(super) authority: String,
    pub(super) host: String,
    pub(super) port: u16,
    /// `Proxy-Authorization` to send, from the URL's credentials.
    pub(super) authorization: Option<HeaderValue>,
    /// The proxy as logs and messages name it: `http://host:port`.
    pub(super) shown: String,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("proxy", &self.shown)
            .field("credentials", &self.authorization.is_some())
            .finish()
    }
}

impl Proxy {
    /// Parses a proxy URL from variable `var`; the error never shows the
    /// URL's credentials.
    fn parse(var: &str, value: &str) -> Result<Self, String> {
        let value = value.trim();
        let (scheme, rest) = match value.split_once("://") {
            Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
            None => ("http".to_owned(), value),
        };
        // Credentials first, at the last `@`: a password may hold `/`, `?`
        // or `#`, and none of it may reach an error.
        let (userinfo, rest) = match rest.rsplit_once('@') {
            Some((userinfo, rest)) => (Some(userinfo), rest),
            None => (None, rest),
        };
        let host_port = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let invalid = |why: &str| format!("{var}: invalid proxy http://{host_port}: {why}");
        if scheme != "http" {
            return Err(invalid(&format!(
                "only http:// proxies are supported, not {scheme}://"
            )));
        }
        let (host, port) = match host_port.strip_prefix('[') {
            Some(v6) => match v6.split_once(']') {
                Some((host, rest)) => (host, rest.strip_prefix(':')),
                None => return Err(invalid("an unclosed [")),
            },
            None => match host_port.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (host_port, None),
            },
        };
        let host = host.to_ascii_lowercase();
        if host.is_empty() || host.contains(['/', '@', ' ']) {
            return Err(invalid("no host"));
        }
        let port = match port {
            Some(port) => port.parse::<u16>().map_err(|_| invalid("not a port"))?,
            None => 80,
        };
        let authorization = userinfo
            .map(|userinfo| {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                let credentials = format!("{}:{}", percent_decode(user), percent_decode(password));
                let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
                let mut value = HeaderValue::try_from(format!("Basic {encoded}"))
                    .map_err(|_| invalid("the credentials cannot be sent"))?;
                value.set_sensitive(true);
                Ok::<_, String>(value)
            })
            .transpose()?;
        let authority = crate::runtime::capabilities::egress::authority(&host, port);
        Ok(Self {
            shown: format!("http://{authority}"),
            authority,
            host,
            port,
            authorization,
        })
    }
}

/// `%XX` escapes decoded; a malformed escape is kept as written.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            // Two hex digits make a byte.
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One `NO_PROXY` entry.
#[derive(Debug, Clone, PartialEq)]
enum Bypass {
    Everything,
    /// A host and its subdomains.
    Domain(String, Option<u16>),
    Address(IpAddr, Option<u16>),
    Network(IpNet, Option<u16>),
}

impl Bypass {
    fn parse(entry: &str) -> Option<Self> {
        let entry = entry.trim().to_ascii_lowercase();
        if entry.is_empty() {
            return None;
        }
        if entry == "*" {
            return Some(Self::Everything);
        }
        if let Ok(net) = entry.parse::<IpNet>() {
            return Some(Self::Network(net, None));
        }
        if let Ok(ip) = entry
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            return Some(Self::Address(ip, None));
        }
        // `[v6]:port`, `v4:port`, `v4/len:port`, `host:port`.
        let (host, port) = match entry.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() => match port.parse::<u16>() {
                Ok(port) => (host, Some(port)),
                Err(_) => return None,
            },
            _ => (entry.as_str(), None),
        };
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(net) = bare.parse::<IpNet>() {
            return Some(Self::Network(net, port));
        }
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Some(Self::Address(ip, port));
        }
        let domain = host.trim_start_matches("*.").trim_start_matches('.');
        (!domain.is_empty()).then(|| Self::Domain(domain.to_owned(), port))
    }

    fn matches(&self, host: &str, ip: Option<IpAddr>, port: u16) -> bool {
        let port_ok = |wanted: &Option<u16>| wanted.is_none_or(|p| p == port);
        match self {
            Self::Everything => true,
            Self::Domain(domain, wanted) => {
                port_ok(wanted)
                    && (host == domain
                        || host
                            .strip_suffix(domain.as_str())
                            .is_some_and(|prefix| prefix.ends_with('.')))
            }
            Self::Address(address, wanted) => port_ok(wanted) && ip == Some(*address),
            Self::Network(net, wanted) => port_ok(wanted) && ip.is_some_and(|ip| net.contains(&ip)),
        }
    }
}

/// How a request reaches its target.
#[derive(Debug, Clone, Copy)]
pub(super) enum Route<'a> {
    /// A connection to the target itself.
    Direct,
    /// Through the proxy: a `CONNECT` tunnel for https, the request in
    /// absolute form for http.
    Proxy(&'a Proxy),
}

/// The proxies of the server's environment.
#[derive(Debug, Default)]
pub(in crate::runtime) struct ProxySettings {
    http: Option<Proxy>,
    https: Option<Proxy>,
    bypass: Vec<Bypass>,
}

impl ProxySettings {
    /// No proxy.
    #[cfg(test)]
    pub(in crate::runtime) fn none() -> Self {
        Self::default()
    }

    /// The proxies the server's environment names; an invalid proxy URL is
    /// an error naming its variable (never its credentials).
    pub(in crate::runtime) fn from_env() -> Result<Self, String> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let first = |names: [&'static str; 2]| {
            names.into_iter().find_map(|name| {
                lookup(name)
                    .filter(|value| !value.trim().is_empty())
                    .map(|value| (name, value))
            })
        };
        let parse = |found: Option<(&str, String)>| {
            found
                .map(|(name, value)| Proxy::parse(name, &value))
                .transpose()
        };
        let all = parse(first(["ALL_PROXY", "all_proxy"]))?;
        let http = parse(first(["HTTP_PROXY", "http_proxy"]))?.or_else(|| all.clone());
        let https = parse(first(["HTTPS_PROXY", "https_proxy"]))?.or(all);
        let bypass = first(["NO_PROXY", "no_proxy"])
            .map(|(_, value)| value.split(',').filter_map(Bypass::parse).collect())
            .unwrap_or_default();
        Ok(Self {
            http,
            https,
            bypass,
        })
    }

    /// How a request to `scheme://host:port` goes.
    pub(super) fn route(&self, scheme: &str, host: &str, port: u16) -> Route<'_> {
        let proxy = match scheme {
            "http" => self.http.as_ref(),
            _ => self.https.as_ref(),
        };
        let Some(proxy) = proxy else {
            return Route::Direct;
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let ip = host.parse::<IpAddr>().ok();
        if self.bypass.iter().any(|b| b.matches(&host, ip, port)) {
            Route::Direct
        } else {
            Route::Proxy(proxy)
        }
    }

    /// A line for the start-up log: the proxies, without credentials.
    pub(in crate::runtime) fn summary(&self) -> Option<String> {
        if self.http.is_none() && self.https.is_none() {
            return None;
        }
        let shown = |p: &Option<Proxy>| p.as_ref().map_or("none".to_owned(), |p| p.shown.clone());
        Some(format!(
            "outbound proxy: https via {}, http via {}, {} NO_PROXY entries",
            shown(&self.https),
            shown(&self.http),
            self.bypass.len()
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<ProxySettings, String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ProxySettings::from_lookup(|name| vars.get(name).cloned())
    }

    fn proxied(settings: &ProxySettings, scheme: &str, host: &str, port: u16) -> Option<String> {
        match settings.route(scheme, host, port) {
            Route::Direct => None,
            Route::Proxy(proxy) => Some(proxy.shown.clone()),
        }
    }

    #[test]
    fn each_scheme_has_its_proxy_and_all_proxy_fills_in() {
        let s = settings(&[
            ("HTTPS_PROXY", "http://secure:3128"),
            ("all_proxy", "plain:8080"),
        ])
        .expect("valid");
        assert_eq!(
            proxied(&s, "https", "a.example.com", 443).as_deref(),
            Some("http://secure:3128")
        );
        assert_eq!(
            proxied(&s, "http", "a.example.com", 80).as_deref(),
            Some("http://plain:8080")
        );
        let upper_wins =
            settings(&[("HTTPS_PROXY", "up:1"), ("https_proxy", "low:2")]).expect("valid");
        assert_eq!(
            proxied(&upper_wins, "https", "x", 443).as_deref(),
            Some("http://up:1")
        );
        let lower = settings(&[("https_proxy", "low:2")]).expect("valid");
        assert_eq!(
            proxied(&lower, "https", "x", 443).as_deref(),
            Some("http://low:2")
        );
        assert_eq!(proxied(&lower, "http", "x", 80), None);
        assert!(settings(&[]).expect("valid").summary().is_none());
    }

    #[test]
    fn no_proxy_matches_names_suffixes_addresses_ranges_and_ports() {
        let s = settings(&[
            ("HTTPS_PROXY", "http://p:3128"),
            (
                "NO_PROXY",
                "internal.example, .corp.example, *.svc.local, 10.0.0.0/8, 192.168.1.7, [::1], \
                 api.example.com:8443, 172.16.0.0/12:9000",
            ),
        ])
        .expect("valid");
        for (host, port) in [
            ("internal.example", 443),
            ("a.internal.example", 443),
            ("corp.example", 443),
            ("x.y.corp.example", 443),
            ("db.svc.local", 443),
            ("10.1.2.3", 443),
            ("192.168.1.7", 443),
            ("::1", 443),
            ("[::1]", 443),
            ("api.example.com", 8443),
            ("172.20.0.1", 9000),
            ("INTERNAL.example.", 443),
        ] {
            assert_eq!(proxied(&s, "https", host, port), None, "{host}:{port}");
        }
        for (host, port) in [
            ("notinternal.example", 443),
            ("api.example.com", 443),
            ("11.0.0.1", 443),
            ("192.168.1.8", 443),
            ("172.20.0.1", 443),
            ("example.com", 443),
        ] {
            assert!(proxied(&s, "https", host, port).is_some(), "{host}:{port}");
        }
        let everything = settings(&[("HTTPS_PROXY", "p:1"), ("no_proxy", "*")]).expect("valid");
        assert_eq!(proxied(&everything, "https", "anything", 443), None);
    }

    #[test]
    fn credentials_become_basic_auth_and_are_shown_nowhere() {
        let s =
            settings(&[("HTTPS_PROXY", "http://us%40er:p%3Ass@proxy.corp:3128/")]).expect("valid");
        let Route::Proxy(proxy) = s.route("https", "a.example.com", 443) else {
            panic!("not proxied");
        };
        let expected = base64::engine::general_purpose::STANDARD.encode("us@er:p:ss");
        let value = proxy.authorization.as_ref().expect("credentials");
        assert_eq!(
            value.to_str().ok(),
            Some(format!("Basic {expected}").as_str())
        );
        assert!(value.is_sensitive());
        assert_eq!(proxy.authority, "proxy.corp:3128");
        for shown in [
            proxy.shown.clone(),
            format!("{proxy:?}"),
            format!("{s:?}"),
            s.summary().expect("summary"),
        ] {
            assert!(
                !shown.contains("p%3Ass") && !shown.contains("p:ss"),
                "{shown}"
            );
            assert!(
                !shown.contains(&expected) && !shown.contains("us%40er"),
                "{shown}"
            );
        }
        let err = settings(&[("HTTPS_PROXY", "socks5://user:secret@p:1080")]).expect_err("socks");
        assert!(
            err.contains("HTTPS_PROXY") && !err.contains("secret"),
            "{err}"
        );
        for url in ["http://user:secret@", "http://user:se/cr#et@proxy:x"] {
            let err = settings(&[("HTTP_PROXY", url)]).expect_err(url);
            assert!(!err.contains("se") && !err.contains("cr"), "{err}");
        }
        let s = settings(&[("HTTP_PROXY", "http://u:p/w?x#y@proxy:3128/path")]).expect("valid");
        let Route::Proxy(proxy) = s.route("http", "a", 80) else {
            panic!("not proxied");
        };
        assert_eq!(proxy.authority, "proxy:3128");
        let expected = base64::engine::general_purpose::STANDARD.encode("u:p/w?x#y");
        assert_eq!(
            proxy.authorization.as_ref().and_then(|v| v.to_str().ok()),
            Some(format!("Basic {expected}").as_str())
        );
    }
}

//! Host-key verification against known_hosts lines, as OpenSSH writes them:
//!
//! ```text
//! login.example.com,10.0.0.5 ssh-ed25519 AAAAC3Nza...
//! [login.example.com]:2222 ssh-rsa AAAAB3Nza...
//! |1|salt-base64|hash-base64 ecdsa-sha2-nistp256 AAAAE2Vj...
//! *.hpc.example.com,!bad.hpc.example.com ssh-ed25519 AAAA...
//! @revoked * ssh-rsa AAAAB3Nza...
//! ```
//!
//! A host on port 22 is looked up by its name, on another port as
//! `[name]:port`. Hashed entries (`|1|`, HMAC-SHA1 of that name) and
//! patterns (`*`, `?`, `!negation`) are understood; `@revoked` keys are
//! refused everywhere; `@cert-authority` lines are skipped (certificates
//! are not accepted). Lines that cannot be parsed are skipped, counted, so
//! that one bad line does not hide the good ones.

use base64::{Engine as _, engine::general_purpose::STANDARD};
use ring::hmac;
use russh::keys::{HashAlg, PublicKey};

/// Known hosts from every source a destination has, parsed.
#[derive(Debug, Clone, Default)]
pub(super) struct KnownHosts {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    revoked: bool,
    hosts: HostMatcher,
    key: PublicKey,
}

#[derive(Debug, Clone)]
enum HostMatcher {
    /// `|1|salt|hash`.
    Hashed { salt: Vec<u8>, hash: Vec<u8> },
    /// Comma-separated patterns, some negated.
    Patterns(Vec<(bool, String)>),
}

/// What the known hosts say of a server's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// An entry for the host has this key.
    Known,
    /// Entries for the host exist, none with this key.
    Mismatch,
    /// No entry names the host.
    Unknown,
    /// The key is marked `@revoked`.
    Revoked,
}

impl KnownHosts {
    /// Parses known_hosts text, adding to what is there; returns how many
    /// non-empty, non-comment lines were skipped as unreadable.
    pub(super) fn add(&mut self, text: &str) -> usize {
        let mut skipped = 0;
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match parse_line(line) {
                Some(Some(entry)) => self.entries.push(entry),
                Some(None) => {}
                None => skipped += 1,
            }
        }
        skipped
    }

    /// Adds the entries of `other`.
    pub(super) fn extend(&mut self, other: &Self) {
        self.entries.extend(other.entries.iter().cloned());
    }

    /// Judges `key`, offered by `host` on `port`.
    pub(super) fn judge(&self, host: &str, port: u16, key: &PublicKey) -> Verdict {
        let name = lookup_name(host, port);
        let same_key = |entry: &Entry| entry.key.key_data() == key.key_data();
        if self.entries.iter().any(|e| e.revoked && same_key(e)) {
            return Verdict::Revoked;
        }
        let mut named = false;
        for entry in self.entries.iter().filter(|e| !e.revoked) {
            if entry.hosts.matches(&name) {
                if same_key(entry) {
                    return Verdict::Known;
                }
                named = true;
            }
        }
        if named {
            Verdict::Mismatch
        } else {
            Verdict::Unknown
        }
    }
}

/// The name a host is filed under: `host`, or `[host]:port` off port 22.
fn lookup_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_ascii_lowercase()
    } else {
        format!("[{}]:{port}", host.to_ascii_lowercase())
    }
}

/// `SHA256:...` of a key, as `ssh-keygen -l` shows it.
pub(super) fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// One line: `Some(Some(entry))`, `Some(None)` for a line deliberately
/// skipped (`@cert-authority`), `None` for one that cannot be read.
fn parse_line(line: &str) -> Option<Option<Entry>> {
    let mut fields = line.split_whitespace();
    let mut first = fields.next()?;
    let mut revoked = false;
    if let Some(marker) = first.strip_prefix('@') {
        match marker {
            "revoked" => revoked = true,
            "cert-authority" => return Some(None),
            _ => return None,
        }
        first = fields.next()?;
    }
    let _algorithm = fields.next()?;
    let key = russh::keys::parse_public_key_base64(fields.next()?).ok()?;
    let hosts = if let Some(hashed) = first.strip_prefix("|1|") {
        let (salt, hash) = hashed.split_once('|')?;
        HostMatcher::Hashed {
            salt: STANDARD.decode(salt).ok()?,
            hash: STANDARD.decode(hash).ok()?,
        }
    } else {
        HostMatcher::Patterns(
            first
                .split(',')
                .filter(|p| !p.is_empty())
                .map(|p| match p.strip_prefix('!') {
                    Some(negated) => (true, negated.to_ascii_lowercase()),
                    None => (false, p.to_ascii_lowercase()),
                })
                .collect(),
        )
    };
    Some(Some(Entry {
        revoked,
        hosts,
        key,
    }))
}

impl HostMatcher {
    fn matches(&self, name: &str) -> bool {
        match self {
            Self::Hashed { salt, hash } => {
                let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, salt);
                hmac::verify(&key, name.as_bytes(), hash).is_ok()
            }
            Self::Patterns(patterns) => {
                let mut matched = false;
                for (negated, pattern) in patterns {
                    if wildcard_match(pattern, name) {
                        if *negated {
                            return false;
                        }
                        matched = true;
                    }
                }
                matched
            }
        }
    }
}

/// `*` and `?` matching, as OpenSSH's `match_pattern`.
fn wildcard_match(pattern: &str, text: &str) -> bool {
    let (pattern, text) = (pattern.as_bytes(), text.as_bytes());
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    // Two ed25519 public keys (made with ssh-keygen for these tests).
    const KEY_A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIPmuZ+EhAhr1GqQe7p/Pvl6oWrsZWYJRK1r/48BlYr9+";
    const KEY_B: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIBrogWY4ScLTVmjdjXVjlMqXAd3KDZphXCJbS2Hb/uYi";

    fn key(base64: &str) -> PublicKey {
        russh::keys::parse_public_key_base64(base64).expect("a key")
    }

    impl KnownHosts {
        fn parse<'a>(texts: impl IntoIterator<Item = &'a str>) -> Self {
            let mut known = Self::default();
            for text in texts {
                assert_eq!(known.add(text), 0, "{text}");
            }
            known
        }
    }

    /// `|1|salt|hash` for `name`, as `ssh-keygen -H` writes it.
    fn hashed(name: &str, salt: &[u8]) -> String {
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, salt),
            name.as_bytes(),
        );
        format!(
            "|1|{}|{}",
            STANDARD.encode(salt),
            STANDARD.encode(tag.as_ref())
        )
    }

    #[test]
    fn a_host_is_known_by_name_port_hash_or_pattern() {
        let known = KnownHosts::parse([
            format!("login.example.com,10.0.0.5 ssh-ed25519 {KEY_A}").as_str(),
            format!("[login.example.com]:2222 ssh-ed25519 {KEY_B}").as_str(),
            format!(
                "{} ssh-ed25519 {KEY_A}",
                hashed("[127.0.0.1]:2200", b"0123456789abcdefghij")
            )
            .as_str(),
            format!("*.hpc.example.com,!bad.hpc.example.com ssh-ed25519 {KEY_B}").as_str(),
        ]);
        let (a, b) = (key(KEY_A), key(KEY_B));
        assert_eq!(known.judge("login.example.com", 22, &a), Verdict::Known);
        assert_eq!(known.judge("LOGIN.example.com", 22, &a), Verdict::Known);
        assert_eq!(known.judge("10.0.0.5", 22, &a), Verdict::Known);
        assert_eq!(known.judge("login.example.com", 22, &b), Verdict::Mismatch);
        assert_eq!(known.judge("login.example.com", 2222, &b), Verdict::Known);
        assert_eq!(
            known.judge("login.example.com", 2222, &a),
            Verdict::Mismatch
        );
        assert_eq!(known.judge("127.0.0.1", 2200, &a), Verdict::Known);
        assert_eq!(known.judge("127.0.0.1", 2201, &a), Verdict::Unknown);
        assert_eq!(known.judge("n1.hpc.example.com", 22, &b), Verdict::Known);
        assert_eq!(known.judge("bad.hpc.example.com", 22, &b), Verdict::Unknown);
        assert_eq!(known.judge("other.example.com", 22, &a), Verdict::Unknown);
    }

    #[test]
    fn revoked_keys_are_refused_and_unreadable_lines_skipped() {
        let mut known = KnownHosts::default();
        let skipped = known.add(&format!(
            "# a comment\n\nlogin ssh-ed25519 {KEY_A}\n@revoked * ssh-ed25519 {KEY_A}\n\
             @cert-authority *.example.com ssh-ed25519 {KEY_B}\nlogin ssh-ed25519 not-base64!\n\
             @unknown login ssh-ed25519 {KEY_B}\n"
        ));
        assert_eq!(skipped, 2);
        assert_eq!(known.judge("login", 22, &key(KEY_A)), Verdict::Revoked);
        // The cert-authority line names no host key.
        assert_eq!(
            known.judge("x.example.com", 22, &key(KEY_B)),
            Verdict::Unknown
        );
    }

    #[test]
    fn patterns_match_as_openssh_does() {
        for (pattern, text, expected) in [
            ("*", "anything", true),
            ("*.example.com", "a.b.example.com", true),
            ("*.example.com", "example.com", false),
            ("node?", "node1", true),
            ("node?", "node10", false),
            ("[10.0.0.*]:2222", "[10.0.0.7]:2222", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
        ] {
            assert_eq!(
                wildcard_match(pattern, text),
                expected,
                "{pattern} ~ {text}"
            );
        }
    }

    #[test]
    fn fingerprints_read_as_ssh_keygen_shows_them() {
        // `ssh-keygen -l -E sha256` of KEY_A.
        assert_eq!(
            fingerprint(&key(KEY_A)),
            "SHA256:50+Qrpy7btgPzbcKAPThz+CDbMheJofaa81F6l2p3WA"
        );
    }
}

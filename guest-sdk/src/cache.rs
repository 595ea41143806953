//! Values worth keeping from one call to the next — a signed token, a token
//! fetched from a metadata server — each until a time it names.
//!
//! The cache lives in the connector's instance. By default every call runs
//! in a fresh instance, so the cache is empty at the start of each call and
//! a value is made once per call, as without it. When the plugin's manifest
//! opts into `instance_reuse = "connection"`, an instance serves later calls
//! with the very same connection map (secrets and configs) and no others,
//! so what one call cached is found by the next calls *of that connection*
//! only, until its time is up.
//!
//! ```
//! use flyte_connector_sdk::cache::{self, Expiring};
//! # fn sign(key: &str, exp: u64) -> Result<String, flyte_connector_sdk::Error> { Ok(format!("{key}{exp}")) }
//! # fn token(key_pem: &str, now: u64) -> Result<String, flyte_connector_sdk::Error> {
//! let token = cache::get_or_try_insert(&cache::key("my-jwt", &[key_pem]), now, || {
//!     let exp = now + 3600;
//!     // Made again five minutes (`REFRESH_MARGIN_SECS`) before it expires.
//!     Ok(Expiring::expires_at(sign(key_pem, exp)?, exp))
//! })?;
//! # Ok(token)
//! # }
//! ```
//!
//! Errors are never cached: a failed `make` is tried again by the next call.
//! At most [`CAPACITY`] values are kept; beyond that the oldest goes.

use std::{any::Any, cell::RefCell};

use crate::Error;

/// Values kept at most.
pub const CAPACITY: usize = 64;

/// A value and the time (Unix seconds) from which it must be made again.
#[derive(Debug, Clone)]
pub struct Expiring<V> {
    value: V,
    refresh_at: u64,
}

/// How long before a token's expiry [`Expiring::expires_at`] has it made
/// again, so a call never sends one about to lapse.
pub const REFRESH_MARGIN_SECS: u64 = 300;

impl<V> Expiring<V> {
    /// `value`, good until `refresh_at` (Unix seconds, exclusive).
    pub fn until(value: V, refresh_at: u64) -> Self {
        Self { value, refresh_at }
    }

    /// A token that expires at `expires_at` (Unix seconds): good until
    /// [`REFRESH_MARGIN_SECS`] before then.
    pub fn expires_at(value: V, expires_at: u64) -> Self {
        Self::until(value, expires_at.saturating_sub(REFRESH_MARGIN_SECS))
    }
}

struct Entry {
    key: String,
    refresh_at: u64,
    value: Box<dyn Any>,
}

thread_local! {
    // A component instance runs one call at a time on one thread.
    static ENTRIES: RefCell<Vec<Entry>> = const { RefCell::new(Vec::new()) };
}

/// A cache key from a namespace (what the value is) and the inputs it
/// depends on, each length-prefixed so no two lists of parts meet. Secrets
/// may be parts: keys are compared, never shown.
pub fn key(namespace: &str, parts: &[&str]) -> String {
    let mut key = String::with_capacity(
        namespace.len() + parts.iter().map(|part| part.len() + 8).sum::<usize>(),
    );
    key.push_str(namespace);
    for part in parts {
        key.push('\u{0}');
        key.push_str(&part.len().to_string());
        key.push(':');
        key.push_str(part);
    }
    key
}

/// The value cached under `key` if it is still good at `now` (Unix seconds),
/// else the one `make` makes, which is then cached (an error is returned
/// and not cached).
pub fn get_or_try_insert<V: Clone + 'static>(
    key: &str,
    now: u64,
    make: impl FnOnce() -> Result<Expiring<V>, Error>,
) -> Result<V, Error> {
    let found = ENTRIES.with_borrow(|entries| {
        entries
            .iter()
            .find(|entry| entry.key == key && now < entry.refresh_at)
            .and_then(|entry| entry.value.downcast_ref::<V>().cloned())
    });
    if let Some(value) = found {
        return Ok(value);
    }
    // Made outside the borrow: `make` may use the cache itself.
    let made = make()?;
    ENTRIES.with_borrow_mut(|entries| {
        entries.retain(|entry| entry.key != key && now < entry.refresh_at);
        if entries.len() >= CAPACITY {
            entries.remove(0);
        }
        entries.push(Entry {
            key: key.to_owned(),
            refresh_at: made.refresh_at,
            value: Box::new(made.value.clone()),
        });
    });
    Ok(made.value)
}

/// Empties the cache (for tests).
pub fn clear() {
    ENTRIES.with_borrow_mut(Vec::clear);
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[test]
    fn a_value_is_made_once_while_good_and_again_after() {
        clear();
        let made = Cell::new(0);
        let make = || {
            made.set(made.get() + 1);
            Ok(Expiring::until(made.get(), 100))
        };
        assert_eq!(get_or_try_insert("k", 10, make).ok(), Some(1));
        assert_eq!(get_or_try_insert("k", 99, make).ok(), Some(1));
        assert_eq!(get_or_try_insert("k", 100, make).ok(), Some(2));
        assert_eq!(made.get(), 2);
    }

    #[test]
    fn a_token_is_made_again_the_margin_before_it_expires() {
        clear();
        let token = |n: u32| move || Ok(Expiring::expires_at(n, 1000));
        let margin = REFRESH_MARGIN_SECS;
        assert_eq!(get_or_try_insert("t", 0, token(1)).ok(), Some(1));
        assert_eq!(get_or_try_insert("t", 999 - margin, token(2)).ok(), Some(1));
        assert_eq!(
            get_or_try_insert("t", 1000 - margin, token(3)).ok(),
            Some(3)
        );
        // A token shorter-lived than the margin is never kept.
        assert_eq!(
            get_or_try_insert("short", 0, || Ok(Expiring::expires_at(4, 60))).ok(),
            Some(4)
        );
        assert_eq!(
            get_or_try_insert("short", 0, || Ok(Expiring::expires_at(5, 60))).ok(),
            Some(5)
        );
    }

    #[test]
    fn errors_are_not_cached_and_keys_are_apart() {
        clear();
        let failed: Result<u32, Error> =
            get_or_try_insert("k", 0, || Err(Error::failed("no token today")));
        assert!(failed.is_err());
        assert_eq!(
            get_or_try_insert("k", 0, || Ok(Expiring::until(7, 10))).ok(),
            Some(7)
        );
        assert_eq!(
            get_or_try_insert("other", 0, || Ok(Expiring::until(8, 10))).ok(),
            Some(8)
        );
        assert_ne!(key("ns", &["ab", "c"]), key("ns", &["a", "bc"]));
        assert_ne!(key("ns", &["a"]), key("other", &["a"]));
    }

    #[test]
    fn the_cache_keeps_at_most_its_capacity() {
        clear();
        for n in 0..CAPACITY + 10 {
            let _ = get_or_try_insert(&n.to_string(), 0, || Ok(Expiring::until(n, 10)));
        }
        let len = ENTRIES.with_borrow(Vec::len);
        assert_eq!(len, CAPACITY);
        // The oldest went, the newest stayed.
        let newest = CAPACITY + 9;
        assert_eq!(
            get_or_try_insert(&newest.to_string(), 0, || Ok(Expiring::until(0, 10))).ok(),
            Some(newest)
        );
        assert_eq!(
            get_or_try_insert("0", 0, || Ok(Expiring::until(1000, 10))).ok(),
            Some(1000)
        );
    }
}

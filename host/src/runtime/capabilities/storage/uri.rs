//! Object URIs as the storage capability takes them: parsed into the store
//! they name and the path in it, and judged against the call's output
//! prefix, segment by segment, so that `s3://b/run/a0` admits
//! `s3://b/run/a0/model` but neither `s3://b/run/a01` nor
//! `s3://b/run/a0/../x`.

use url::Url;

use super::StorageError;

/// An object URI, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ObjectUri {
    /// `s3`, `gs`, `abfs`, `file`, ... in lower case.
    pub(super) scheme: String,
    /// The bucket or container (with the account, for Azure); empty for
    /// `file`.
    pub(super) bucket: String,
    /// The path's segments, decoded.
    pub(super) segments: Vec<String>,
    /// As given.
    pub(super) text: String,
}

impl ObjectUri {
    /// Parses `text`; `.` and `..` segments and empty ones inside the path
    /// are refused.
    pub(super) fn parse(text: &str) -> Result<Self, StorageError> {
        // Before parsing, which would resolve dot segments away.
        if raw_segments(text).any(|s| {
            let decoded = percent_decode(s).unwrap_or_default();
            decoded == "." || decoded == ".."
        }) {
            return Err(StorageError::Invalid(format!(
                "{text} has a `.` or `..` path segment"
            )));
        }
        let url = Url::parse(text)
            .map_err(|err| StorageError::Invalid(format!("{text} is not a URI: {err}")))?;
        let scheme = url.scheme().to_ascii_lowercase();
        let bucket = match scheme.as_str() {
            "file" => String::new(),
            _ => {
                let host = url.host_str().unwrap_or_default();
                match url.username() {
                    // abfs://container@account.dfs.core.windows.net/path
                    "" => host.to_owned(),
                    container => format!("{container}@{host}"),
                }
            }
        };
        if scheme != "file" && bucket.is_empty() {
            return Err(StorageError::Invalid(format!("{text} names no bucket")));
        }
        let path = url.path().trim_start_matches('/').trim_end_matches('/');
        let mut segments = Vec::new();
        if !path.is_empty() {
            for segment in path.split('/') {
                let decoded = percent_decode(segment)
                    .ok_or_else(|| StorageError::Invalid(format!("{text} is not UTF-8")))?;
                if decoded.is_empty() || decoded == "." || decoded == ".." {
                    return Err(StorageError::Invalid(format!(
                        "{text} has an empty, `.` or `..` path segment"
                    )));
                }
                segments.push(decoded);
            }
        }
        Ok(Self {
            scheme,
            bucket,
            segments,
            text: text.to_owned(),
        })
    }

    /// Whether it is `prefix` or under it.
    pub(super) fn is_under(&self, prefix: &ObjectUri) -> bool {
        self.scheme == prefix.scheme
            && self.bucket == prefix.bucket
            && self.segments.len() >= prefix.segments.len()
            && self
                .segments
                .iter()
                .zip(&prefix.segments)
                .all(|(a, b)| a == b)
    }

    /// The path inside the store, `/`-joined.
    pub(super) fn key(&self) -> String {
        self.segments.join("/")
    }

    /// `self/relative` (a directory's file).
    pub(super) fn join(&self, relative: &str) -> Self {
        let mut joined = self.clone();
        joined.segments.extend(
            relative
                .split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        );
        joined.text = format!("{}/{relative}", self.text.trim_end_matches('/'));
        joined
    }
}

/// The path segments of `text` as written: after `scheme://authority`,
/// before a query or fragment.
fn raw_segments(text: &str) -> impl Iterator<Item = &str> {
    let after_scheme = text.split_once("://").map_or("", |(_, rest)| rest);
    let path = after_scheme.split_once('/').map_or("", |(_, path)| path);
    let path = path.split(['?', '#']).next().unwrap_or_default();
    path.split('/')
}

/// `%XX` escapes decoded; `None` when the result is not UTF-8.
fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(high << 4 | low);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn hex(byte: u8) -> Option<u8> {
    (byte as char)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(text: &str) -> ObjectUri {
        ObjectUri::parse(text).expect(text)
    }

    #[test]
    fn an_output_prefix_admits_what_is_under_it_segment_by_segment() {
        let prefix = uri("s3://bucket/run/a0/");
        assert!(uri("s3://bucket/run/a0/model").is_under(&prefix));
        assert!(uri("s3://bucket/run/a0").is_under(&prefix));
        assert!(uri("s3://bucket/run/a0/shards/part-1").is_under(&prefix));
        assert!(!uri("s3://bucket/run/a01/model").is_under(&prefix));
        assert!(!uri("s3://other/run/a0/model").is_under(&prefix));
        assert!(!uri("gs://bucket/run/a0/model").is_under(&prefix));
        assert!(!uri("s3://bucket/run").is_under(&prefix));
        let local = uri("file:///data/flyte/run");
        assert!(uri("file:///data/flyte/run/x").is_under(&local));
        assert!(!uri("file:///data/flyte/runner").is_under(&local));
    }

    #[test]
    fn dot_segments_and_garbage_are_refused() {
        for bad in [
            "s3://bucket/run/a0/../x",
            "s3://bucket/run/a0/%2e%2e/x",
            "s3://bucket/run//x",
            "s3:///no-bucket",
            "not a uri",
        ] {
            assert!(ObjectUri::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn azure_names_its_container_with_the_account() {
        let az = uri("abfs://data@account.dfs.core.windows.net/run/a0");
        assert_eq!(az.bucket, "data@account.dfs.core.windows.net");
        assert_eq!(az.key(), "run/a0");
        assert_eq!(az.join("model/x").key(), "run/a0/model/x");
    }
}

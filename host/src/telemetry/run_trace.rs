//! The trace a Flyte run's spans share, found without the executor's help
//! (it sends no trace context to connectors).
//!
//! `flyteplugins-otel` derives a run's trace id from the run's identity:
//! BLAKE2b with a 16-byte digest and the personalisation
//! `flyte.otel.run.v`, over `org \0 project \0 domain \0 run-name` in
//! UTF-8. CreateTask carries that identity in its task execution metadata
//! (`taskExecutionId.nodeExecutionId.executionId`), so the connector's
//! spans land in the run's trace beside the task's own.
//!
//! GetTask and DeleteTask carry only the resource meta, so CreateTask
//! leaves the trace id there in a form every JSON reader skips: trailing
//! whitespace ([`append_to_meta`]). flyte's `ResourceMeta.decode`
//! (`json.loads`) and serde_json read the meta as before, so metas stay
//! readable by the Python connectors; the host takes the whitespace off
//! ([`take_from_meta`]) before a connector sees the meta.

use blake2::{Blake2bMac, digest::Mac as _, digest::consts::U16};
use opentelemetry::trace::TraceId;

use crate::proto::connector::TaskExecutionMetadata;

/// The personalisation flyteplugins-otel hashes with: its namespace
/// `flyte.otel.run.v1` cut to BLAKE2b's 16 bytes.
const PERSONALISATION: &[u8; 16] = b"flyte.otel.run.v";

/// The trace id of the run `org`/`project`/`domain`/`run_name`.
pub fn trace_id_for_run(org: &str, project: &str, domain: &str, run_name: &str) -> TraceId {
    let input = [org, project, domain, run_name].join("\0");
    // The MAC type is the one that takes a personalisation; without a key
    // it is the plain hash.
    let digest = Blake2bMac::<U16>::new_with_salt_and_personal(None, &[], PERSONALISATION)
        .map(|mac| mac.chain_update(input.as_bytes()).finalize().into_bytes());
    match digest {
        Ok(bytes) => {
            let id = u128::from_be_bytes(bytes.into());
            // As flyteplugins-otel: an all-zero id (invalid) becomes 1.
            TraceId::from(id.max(1))
        }
        Err(_) => TraceId::INVALID,
    }
}

/// The run's trace id from CreateTask's task execution metadata, when it
/// names the run.
pub fn trace_id_for_task(metadata: Option<&TaskExecutionMetadata>) -> Option<TraceId> {
    let execution = metadata?
        .task_execution_id
        .as_ref()?
        .node_execution_id
        .as_ref()?
        .execution_id
        .as_ref()?;
    if execution.name.is_empty() {
        return None;
    }
    Some(trace_id_for_run(
        &execution.org,
        &execution.project,
        &execution.domain,
        &execution.name,
    ))
}

/// Marks the start of the trace id at the end of a meta: two line breaks,
/// which `json.dumps` and serde_json never end a document with.
const MARK: &[u8; 4] = b"\r\n\r\n";

/// The four whitespace characters a base-4 digit of the id is written as.
const DIGITS: [u8; 4] = [b' ', b'\t', b'\n', b'\r'];

/// Digits of a 128-bit id, two bits each.
const ID_DIGITS: usize = 64;

/// `meta` with `trace_id` after it as whitespace, if `meta` is a JSON
/// document (anything else is left as it is: only JSON readers are sure to
/// skip it).
pub fn append_to_meta(meta: &mut Vec<u8>, trace_id: TraceId) {
    if serde_json::from_slice::<serde::de::IgnoredAny>(meta).is_err() {
        return;
    }
    let id = u128::from_be_bytes(trace_id.to_bytes());
    meta.reserve(MARK.len() + ID_DIGITS);
    meta.extend_from_slice(MARK);
    for digit in (0..ID_DIGITS).rev() {
        meta.push(DIGITS[((id >> (digit * 2)) & 0b11) as usize]);
    }
}

/// The trace id [`append_to_meta`] left in `meta`, taken off it.
pub fn take_from_meta(meta: &mut Vec<u8>) -> Option<TraceId> {
    let start = meta.len().checked_sub(MARK.len() + ID_DIGITS)?;
    let (mark, digits) = meta[start..].split_at(MARK.len());
    if mark != MARK {
        return None;
    }
    let mut id: u128 = 0;
    for byte in digits {
        let digit = DIGITS.iter().position(|d| d == byte)?;
        id = (id << 2) | digit as u128;
    }
    meta.truncate(start);
    Some(TraceId::from(id)).filter(|id| *id != TraceId::INVALID)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_trace_id_is_flyteplugins_otels() {
        // flyteplugins-otel 2.12.1's test vector.
        assert_eq!(
            trace_id_for_run("org1", "flytesnacks", "development", "r-abc123").to_string(),
            "2d0f00b3a3014cf3a976b3851a527bc5"
        );
        // No org: the separator stays.
        assert_eq!(
            trace_id_for_run("", "flytesnacks", "development", "r-abc123").to_string(),
            "9412d1eff76eaee7facc49382efaa157"
        );
    }

    #[test]
    fn a_meta_carries_the_trace_id_as_whitespace_json_readers_skip() {
        let original = br#"{"job_id": "42"}"#.to_vec();
        let trace_id = TraceId::from(0x2d0f00b3a3014cf3a976b3851a527bc5_u128);
        let mut meta = original.clone();
        append_to_meta(&mut meta, trace_id);
        assert!(meta.starts_with(&original) && meta.len() == original.len() + 68);
        let parsed: serde_json::Value = serde_json::from_slice(&meta).expect("still JSON");
        assert_eq!(parsed["job_id"], "42");
        assert_eq!(take_from_meta(&mut meta), Some(trace_id));
        assert_eq!(meta, original);
        // A meta without one is left alone, and a meta that is not JSON
        // never gets one.
        assert_eq!(take_from_meta(&mut meta), None);
        assert_eq!(meta, original);
        let mut binary = vec![0xff, 0x00];
        append_to_meta(&mut binary, trace_id);
        assert_eq!(binary, [0xff, 0x00]);
    }
}

//! Binary literals tagged `msgpack`: how Flyte 2 encodes dataclasses,
//! pydantic models and dicts.

use base64::Engine as _;
use rmpv::Value as Msgpack;
use serde::Deserialize as _;
use serde_json::{Map, Value};

use super::to_json::float_to_json;

/// The `Binary.tag` of msgpack-encoded values.
pub(super) const TAG: &str = "msgpack";

/// Decodes msgpack bytes to JSON. Map keys that are not strings become their
/// JSON text (`1` → `"1"`); raw bytes become base64 strings. Malformed input
/// (reserved markers, truncation, trailing bytes, nesting past the decoder's
/// depth limit) is an error.
pub(super) fn decode(bytes: &[u8]) -> Result<Value, String> {
    let mut reader = std::io::Cursor::new(bytes);
    let value = Msgpack::deserialize(&mut rmp_serde::Deserializer::new(&mut reader))
        .map_err(|err| format!("invalid msgpack binary: {err}"))?;
    let trailing = bytes.len() as u64 - reader.position();
    if trailing > 0 {
        return Err(format!("invalid msgpack binary: {trailing} trailing bytes"));
    }
    to_json(value)
}

fn to_json(value: Msgpack) -> Result<Value, String> {
    Ok(match value {
        Msgpack::Nil => Value::Null,
        Msgpack::Boolean(b) => Value::Bool(b),
        Msgpack::Integer(i) => match (i.as_i64(), i.as_u64()) {
            (Some(i), _) => Value::from(i),
            (None, Some(u)) => Value::from(u),
            (None, None) => return Err(format!("msgpack integer {i} is out of range")),
        },
        Msgpack::F32(f) => float_to_json(f64::from(f)),
        Msgpack::F64(f) => float_to_json(f),
        Msgpack::String(s) => match s.into_str() {
            Some(s) => Value::String(s),
            None => return Err("msgpack string is not valid UTF-8".into()),
        },
        Msgpack::Binary(bytes) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
        Msgpack::Array(items) => {
            Value::Array(items.into_iter().map(to_json).collect::<Result<_, _>>()?)
        }
        Msgpack::Map(entries) => {
            let mut object = Map::with_capacity(entries.len());
            for (key, item) in entries {
                let key = match key {
                    Msgpack::String(s) => s
                        .into_str()
                        .ok_or_else(|| "msgpack map key is not valid UTF-8".to_owned())?,
                    other => to_json(other)?.to_string(),
                };
                object.insert(key, to_json(item)?);
            }
            Value::Object(object)
        }
        Msgpack::Ext(kind, _) => {
            return Err(format!("msgpack extension type {kind} is not supported"));
        }
    })
}

/// Encodes JSON as msgpack.
pub(super) fn encode(value: &Value) -> Result<Vec<u8>, String> {
    rmp_serde::to_vec(value).map_err(|err| format!("cannot encode as msgpack: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_msgpack_is_an_error() {
        for bytes in [
            &[0xc1][..],                     // reserved marker
            &[0x92, 0x01],                   // array of two with one element
            &[0x01, 0x02],                   // trailing byte
            &[0xdd, 0xff, 0xff, 0xff, 0xff], // huge array, no elements
            &[0xc6, 0xff, 0xff, 0xff, 0xff], // huge binary, no bytes
        ] {
            assert!(decode(bytes).is_err(), "{bytes:?} decoded");
        }
        let mut deep = vec![0x91; 5000];
        deep.push(0xc0);
        assert!(
            decode(&deep).is_err(),
            "nesting past the depth limit decoded"
        );
    }

    #[test]
    fn non_string_keys_and_binaries_have_a_json_form() {
        assert_eq!(
            decode(&[0x81, 0x01, 0xa1, b'a']),
            Ok(serde_json::json!({"1": "a"}))
        );
        assert_eq!(decode(&[0xc4, 2, 0, 255]), Ok(serde_json::json!("AP8=")));
    }
}

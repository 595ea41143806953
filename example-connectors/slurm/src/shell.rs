//! Text as the shell and Python write it: the script must be the Python
//! connector's, byte for byte.

use flyte_connector_sdk::python::float_repr;
use serde_json::Value;

/// `s` quoted for a POSIX shell as Python's `shlex.quote` quotes it:
/// unchanged when every character is in `[A-Za-z0-9_@%+=:,./-]`, `''` when
/// empty, else in single quotes with each `'` written `'"'"'`.
pub fn quote(s: &str) -> String {
    if s.is_empty() {
        return "''".to_owned();
    }
    let safe = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c));
    if safe {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\"'\"'"))
    }
}

/// Arguments quoted and joined by spaces, as Python's `shlex.join`.
pub fn join<S: AsRef<str>>(argv: &[S]) -> String {
    argv.iter()
        .map(|arg| quote(arg.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A number of a template's `custom` (a protobuf `Struct`, which holds
/// only doubles) as the Python connector reads it: whole numbers as
/// integers, others as floats.
pub fn number(value: &serde_json::Number) -> String {
    if let Some(integer) = value.as_i64() {
        return integer.to_string();
    }
    match value.as_f64() {
        Some(float) if float.fract() == 0.0 && float.abs() < 9_007_199_254_740_992.0 => {
            // Whole and within f64's exact integers: an exact conversion.
            #[allow(clippy::cast_possible_truncation)]
            let integer = float as i64;
            integer.to_string()
        }
        Some(float) => float_repr(float),
        None => value.to_string(),
    }
}

/// A value of `custom` as Python's `str()` writes it after
/// `MessageToDict`: numbers stay floats (`3.0`), booleans are `True` and
/// `False`, lists and maps are written as Python's `repr`.
pub fn python_str(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => python_repr(other),
    }
}

/// A value as Python's `repr()` writes it.
fn python_repr(value: &Value) -> String {
    match value {
        Value::Null => "None".to_owned(),
        Value::Bool(true) => "True".to_owned(),
        Value::Bool(false) => "False".to_owned(),
        Value::Number(n) => n.as_f64().map(float_repr).unwrap_or_else(|| n.to_string()),
        Value::String(s) => string_repr(s),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(python_repr).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("{}: {}", string_repr(k), python_repr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A string as Python's `repr()` writes it: in single quotes, or double
/// quotes when it holds a `'` and no `"`; backslashes, the quote and
/// control characters escaped.
pub fn string_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quoting_matches_shlex_quote() {
        for (raw, quoted) in [
            ("", "''"),
            ("plain-file_1.txt", "plain-file_1.txt"),
            ("/home/u/.flyte/jobs", "/home/u/.flyte/jobs"),
            ("a b", "'a b'"),
            ("it's", "'it'\"'\"'s'"),
            ("%i|%T|%r", "'%i|%T|%r'"),
            (
                "--container-image=ghcr.io#org/img:tag",
                "'--container-image=ghcr.io#org/img:tag'",
            ),
            ("é", "'é'"),
            ("$HOME", "'$HOME'"),
        ] {
            assert_eq!(quote(raw), quoted, "{raw}");
        }
        assert_eq!(join(&["srun", "--nodes=1", "a b"]), "srun --nodes=1 'a b'");
    }

    #[test]
    fn struct_numbers_read_as_the_python_connector_reads_them() {
        let n = |v: Value| match v {
            Value::Number(n) => number(&n),
            _ => unreachable!(),
        };
        assert_eq!(n(json!(2.0)), "2");
        assert_eq!(n(json!(8)), "8");
        assert_eq!(n(json!(1.5)), "1.5");
        assert_eq!(python_str(&json!(3.0)), "3.0");
        assert_eq!(python_str(&json!(true)), "True");
        assert_eq!(python_str(&json!(["a", "b"])), "['a', 'b']");
        assert_eq!(python_str(&json!({"k": null})), "{'k': None}");
        assert_eq!(string_repr("it's"), "\"it's\"");
        assert_eq!(string_repr("a\nb'\""), "'a\\nb\\'\"'");
    }
}

//! The task's statement for the SQL API: pyformat placeholders
//! (`%(name)s`) become positional `?` bind variables typed from the task's
//! interface, and with `batch` list inputs expand into one multi-row
//! `VALUES` clause, as `flyteplugins-snowflake` documents.

use flyte_connector_sdk::{Error, utc_wall_clock};
use serde_json::{Map, Value, json};

/// A statement ready to send: the SQL with `?` placeholders and its
/// `bindings` object (`{"1": {"type", "value"}, ...}`).
#[derive(Debug, PartialEq)]
pub struct Statement {
    /// The SQL text.
    pub sql: String,
    /// The SQL API's `bindings`; empty without inputs.
    pub bindings: Map<String, Value>,
}

/// One input: its value and its Flyte literal type.
struct Input<'a> {
    value: &'a Value,
    literal_type: &'a Value,
}

/// Builds the statement for `template` and the task's inputs. Without
/// inputs the template is sent as written (as the Python connector does,
/// `%` is then not special).
pub fn prepare(
    template: &str,
    inputs: &Map<String, Value>,
    types: &Map<String, Value>,
    batch: bool,
) -> Result<Statement, Error> {
    let mut statement = Statement {
        sql: String::with_capacity(template.len()),
        bindings: Map::new(),
    };
    if inputs.is_empty() {
        statement.sql.push_str(template);
        return Ok(statement);
    }
    let null_type = Value::Null;
    if !batch {
        statement.bind(template, |name| {
            Some(Input {
                value: inputs.get(name)?,
                literal_type: types.get(name).unwrap_or(&null_type),
            })
        })?;
        return Ok(statement);
    }

    // Batch: `VALUES (%(a)s, %(b)s)` becomes `VALUES (?, ?), (?, ?), ...`,
    // one row per list element. Elsewhere, as in the Python connector's
    // flattened parameters, `%(a_1)s` names row 1 of `a`.
    let rows = batch_rows(inputs)?;
    let element = |name: &str, row: usize| -> Option<Input<'_>> {
        Some(Input {
            value: inputs.get(name)?.as_array()?.get(row)?,
            literal_type: types
                .get(name)
                .and_then(|t| t.get("collectionType"))
                .unwrap_or(&null_type),
        })
    };
    let flattened = |name: &str| {
        let (column, row) = name.rsplit_once('_')?;
        element(column, row.parse().ok()?)
    };
    let (start, end) = values_clause(template)?;
    statement.bind(&template[..start], flattened)?;
    for row in 0..rows {
        if row > 0 {
            statement.sql.push_str("), (");
        }
        statement.bind(&template[start..end], |name| element(name, row))?;
    }
    statement.bind(&template[end..], flattened)?;
    Ok(statement)
}

/// The number of rows of a batch: the length every input list shares.
fn batch_rows(inputs: &Map<String, Value>) -> Result<usize, Error> {
    let mut rows = None;
    for (name, value) in inputs {
        let length = value
            .as_array()
            .ok_or_else(|| {
                Error::invalid_request(format!(
                    "batch input `{name}` is not a list; batch queries take one list per column"
                ))
            })?
            .len();
        match rows {
            None => rows = Some(length),
            Some(rows) if rows != length => {
                return Err(Error::invalid_request(
                    "All batch input lists must have the same length.",
                ));
            }
            Some(_) => {}
        }
    }
    match rows.unwrap_or(0) {
        0 => Err(Error::invalid_request(
            "Batch inputs must contain at least one row.",
        )),
        rows => Ok(rows),
    }
}

impl Statement {
    /// Appends `text` with its pyformat placeholders replaced by `?`,
    /// binding each to the value `lookup` finds for its name, numbered on
    /// from the bindings already made. `%%` is a literal `%`; any other `%`
    /// is an error.
    fn bind<'a>(
        &mut self,
        text: &str,
        lookup: impl Fn(&str) -> Option<Input<'a>>,
    ) -> Result<(), Error> {
        let mut rest = text;
        while let Some(at) = rest.find('%') {
            self.sql.push_str(&rest[..at]);
            rest = &rest[at..];
            if let Some(after) = rest.strip_prefix("%%") {
                self.sql.push('%');
                rest = after;
                continue;
            }
            let placeholder = rest
                .strip_prefix("%(")
                .and_then(|inner| inner.split_once(")s"))
                .filter(|(name, _)| !name.contains(['(', ')']));
            let Some((name, after)) = placeholder else {
                let shown: String = rest.chars().take(12).collect();
                return Err(Error::invalid_request(format!(
                    "the query has a `%` that is not a %(name)s placeholder, near `{shown}` \
                     (write a literal % as %%)"
                )));
            };
            let input = lookup(name).ok_or_else(|| {
                Error::invalid_request(format!(
                    "the query uses %({name})s but the task has no such input"
                ))
            })?;
            let position = (self.bindings.len() + 1).to_string();
            self.bindings.insert(position, binding(name, &input)?);
            self.sql.push('?');
            rest = after;
        }
        self.sql.push_str(rest);
        Ok(())
    }
}

/// The SQL API binding of one value, typed from its Flyte type.
fn binding(name: &str, input: &Input<'_>) -> Result<Value, Error> {
    let simple = input
        .literal_type
        .get("simple")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let (sf_type, value) = match (simple, input.value) {
        ("INTEGER", Value::Null) => ("FIXED", Value::Null),
        ("FLOAT", Value::Null) => ("REAL", Value::Null),
        ("STRING", Value::Null) => ("TEXT", Value::Null),
        ("BOOLEAN", Value::Null) => ("BOOLEAN", Value::Null),
        ("DATETIME", Value::Null) => ("TIMESTAMP_NTZ", Value::Null),
        ("INTEGER", Value::Number(n)) if n.is_i64() || n.is_u64() => {
            ("FIXED", Value::String(n.to_string()))
        }
        ("FLOAT", Value::Number(n)) => ("REAL", Value::String(n.to_string())),
        // The host writes non-finite floats as strings; Snowflake spells them so.
        ("FLOAT", Value::String(s)) if s == "NaN" => ("REAL", json!("NaN")),
        ("FLOAT", Value::String(s)) if s == "Infinity" => ("REAL", json!("inf")),
        ("FLOAT", Value::String(s)) if s == "-Infinity" => ("REAL", json!("-inf")),
        ("STRING", Value::String(s)) => ("TEXT", Value::String(s.clone())),
        ("BOOLEAN", Value::Bool(b)) => ("BOOLEAN", Value::String(b.to_string())),
        // TIMESTAMP_NTZ text: the UTC wall-clock time with nanoseconds.
        ("DATETIME", Value::String(s)) => match utc_wall_clock(s, 9) {
            Some(timestamp) => ("TIMESTAMP_NTZ", Value::String(timestamp)),
            None => return Err(bad_value(name, input)),
        },
        ("INTEGER" | "FLOAT" | "STRING" | "BOOLEAN" | "DATETIME", _) => {
            return Err(bad_value(name, input));
        }
        _ => {
            return Err(Error::invalid_request(format!(
                "input `{name}` has a type Snowflake bind variables cannot take (int, float, \
                 str, bool and datetime can): {}",
                input.literal_type
            )));
        }
    };
    Ok(json!({"type": sf_type, "value": value}))
}

fn bad_value(name: &str, input: &Input<'_>) -> Error {
    Error::invalid_request(format!(
        "input `{name}` does not match its type {}: {}",
        input.literal_type, input.value
    ))
}

/// The byte range of the one `VALUES (...)` clause's contents (between its
/// parentheses, which may nest one level for `%(name)s`).
fn values_clause(template: &str) -> Result<(usize, usize), Error> {
    let upper = template.to_ascii_uppercase();
    let mut clauses = Vec::new();
    let mut from = 0;
    while let Some(found) = upper[from..].find("VALUES") {
        let keyword = from + found;
        from = keyword + "VALUES".len();
        let after_keyword = &template[from..];
        let open = from + (after_keyword.len() - after_keyword.trim_start().len());
        if !template[open..].starts_with('(') {
            continue;
        }
        let mut depth = 0usize;
        for (offset, ch) in template[open..].char_indices() {
            match ch {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        clauses.push((open + 1, open + offset));
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    match clauses.as_slice() {
        [] => Err(Error::invalid_request(
            "Batch inputs require a query template with a VALUES (...) clause.",
        )),
        [clause] => Ok(*clause),
        _ => Err(Error::invalid_request(
            "Batch query expansion supports exactly one VALUES (...) clause.",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(value: Value) -> Map<String, Value> {
        value.as_object().cloned().expect("object")
    }

    fn types() -> Map<String, Value> {
        map(json!({
            "id": {"simple": "INTEGER"},
            "score": {"simple": "FLOAT"},
            "name": {"simple": "STRING"},
            "active": {"simple": "BOOLEAN"},
            "at": {"simple": "DATETIME"},
            "ids": {"collectionType": {"simple": "INTEGER"}},
            "names": {"collectionType": {"simple": "STRING"}},
            "blob": {"blob": {"format": ""}},
        }))
    }

    #[test]
    fn placeholders_become_typed_positional_bindings() {
        let statement = prepare(
            "SELECT * FROM t WHERE id = %(id)s AND name = %(name)s AND s > %(score)s \
             AND active = %(active)s AND at < %(at)s AND pct LIKE '10%%' AND id2 = %(id)s",
            &map(
                json!({"id": 7, "name": "o'hara", "score": 0.5, "active": true,
                         "at": "2024-01-02T03:04:05.5+00:00"}),
            ),
            &types(),
            false,
        )
        .expect("statement");
        assert_eq!(
            statement.sql,
            "SELECT * FROM t WHERE id = ? AND name = ? AND s > ? AND active = ? AND at < ? \
             AND pct LIKE '10%' AND id2 = ?"
        );
        assert_eq!(
            Value::Object(statement.bindings),
            json!({
                "1": {"type": "FIXED", "value": "7"},
                "2": {"type": "TEXT", "value": "o'hara"},
                "3": {"type": "REAL", "value": "0.5"},
                "4": {"type": "BOOLEAN", "value": "true"},
                "5": {"type": "TIMESTAMP_NTZ", "value": "2024-01-02T03:04:05.500000000"},
                "6": {"type": "FIXED", "value": "7"},
            })
        );
    }

    #[test]
    fn without_inputs_the_query_is_sent_as_written() {
        let statement = prepare("SELECT '100%'", &Map::new(), &types(), false).expect("sql");
        assert_eq!(statement.sql, "SELECT '100%'");
        assert!(statement.bindings.is_empty());
    }

    #[test]
    fn batches_expand_into_one_multi_row_values_clause() {
        let statement = prepare(
            "INSERT INTO t (id, name) values (%(ids)s, %(names)s) -- load",
            &map(json!({"ids": [1, 2, 3], "names": ["a", "b", "c"]})),
            &types(),
            true,
        )
        .expect("batch");
        assert_eq!(
            statement.sql,
            "INSERT INTO t (id, name) values (?, ?), (?, ?), (?, ?) -- load"
        );
        let values: Vec<&Value> = statement.bindings.values().map(|b| &b["value"]).collect();
        assert_eq!(values, ["1", "a", "2", "b", "3", "c"]);
        assert_eq!(statement.bindings["2"]["type"], "TEXT");
    }

    #[test]
    fn outside_the_values_clause_a_batch_names_rows_as_python_flattens_them() {
        let statement = prepare(
            "INSERT INTO t VALUES (%(ids)s) -- after %(ids_1)s",
            &map(json!({"ids": [7, 8]})),
            &types(),
            true,
        )
        .expect("batch");
        assert_eq!(statement.sql, "INSERT INTO t VALUES (?), (?) -- after ?");
        assert_eq!(statement.bindings["3"]["value"], "8");
        let err = prepare(
            "INSERT INTO t VALUES (%(ids)s) WHERE %(ids)s",
            &map(json!({"ids": [7]})),
            &types(),
            true,
        )
        .expect_err("a bare column outside VALUES");
        assert!(err.message().contains("%(ids)s"), "{err}");
    }

    #[test]
    fn bad_batches_are_invalid_with_the_python_messages() {
        for (sql, inputs, expected) in [
            (
                "INSERT INTO t VALUES (%(ids)s, %(names)s)",
                json!({"ids": [1, 2], "names": ["a"]}),
                "same length",
            ),
            (
                "INSERT INTO t VALUES (%(ids)s)",
                json!({"ids": []}),
                "at least one row",
            ),
            (
                "INSERT INTO t SELECT %(ids)s",
                json!({"ids": [1]}),
                "a VALUES (...) clause",
            ),
            (
                "INSERT INTO t VALUES (%(ids)s); INSERT INTO u VALUES (%(ids)s)",
                json!({"ids": [1]}),
                "exactly one VALUES",
            ),
            (
                "INSERT INTO t VALUES (%(id)s)",
                json!({"id": 1}),
                "not a list",
            ),
        ] {
            let err = prepare(sql, &map(inputs), &types(), true).expect_err(sql);
            assert!(
                matches!(&err, Error::InvalidRequest(m) if m.contains(expected)),
                "{sql}: {err}"
            );
        }
    }

    #[test]
    fn unknown_placeholders_and_types_name_the_problem() {
        let err = prepare("SELECT %(nope)s", &map(json!({"id": 1})), &types(), false)
            .expect_err("unknown");
        assert!(err.message().contains("%(nope)s"), "{err}");
        let err =
            prepare("SELECT %s", &map(json!({"id": 1})), &types(), false).expect_err("positional");
        assert!(err.message().contains("%%"), "{err}");
        let err = prepare(
            "SELECT %(blob)s",
            &map(json!({"blob": {"uri": "s3://x"}})),
            &types(),
            false,
        )
        .expect_err("blob");
        assert!(err.message().contains("`blob`"), "{err}");
        let err = prepare("SELECT %(id)s", &map(json!({"id": "x"})), &types(), false)
            .expect_err("mistyped");
        assert!(err.message().contains("`id`"), "{err}");
    }
}

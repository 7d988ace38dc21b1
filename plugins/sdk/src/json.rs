//! JSON helpers destinations share.

use serde_json::{Number, Value};

/// A number from a JSON number or numeric text (`50`, `"89.99"`), for platforms that want
/// numbers where loyalty events carry money as text. `None` for anything else.
pub fn number(value: &Value) -> Option<Value> {
    match value {
        Value::Number(n) => Some(Value::Number(n.clone())),
        Value::String(text) => {
            let text = text.trim();
            if let Ok(int) = text.parse::<i64>() {
                return Some(Value::from(int));
            }
            text.parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .and_then(Number::from_f64)
                .map(Value::Number)
        }
        _ => None,
    }
}

/// The `detail` (or `title`, or `message`) of each entry of an error list such as JSON:API's
/// `errors[]`, or of an RFC 7807 problem document, joined by "; ".
pub fn error_details(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let describe = |v: &Value| -> Option<String> {
        ["detail", "title", "message", "error"]
            .iter()
            .find_map(|k| v.get(*k).and_then(Value::as_str))
            .map(str::to_owned)
            .or_else(|| v.as_str().map(str::to_owned))
    };
    let details: Vec<String> = match value.get("errors") {
        Some(Value::Array(errors)) => errors.iter().filter_map(describe).collect(),
        Some(Value::String(text)) => vec![text.clone()],
        _ => describe(&value).into_iter().collect(),
    };
    (!details.is_empty()).then(|| details.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_from_numbers_and_numeric_text() {
        assert_eq!(number(&json!(50)), Some(json!(50)));
        assert_eq!(number(&json!("89.99")), Some(json!(89.99)));
        assert_eq!(number(&json!(" 10 ")), Some(json!(10)));
        assert_eq!(number(&json!("ten")), None);
        assert_eq!(number(&json!(null)), None);
    }

    #[test]
    fn error_details_from_common_shapes() {
        let details = |v: Value| error_details(v.to_string().as_bytes());
        assert_eq!(
            details(json!({"errors":[{"detail":"a"},{"title":"b"}]})).as_deref(),
            Some("a; b")
        );
        assert_eq!(
            details(json!({"detail":"bad email","status":400})).as_deref(),
            Some("bad email")
        );
        assert_eq!(
            details(json!({"errors":"Not Found"})).as_deref(),
            Some("Not Found")
        );
        assert_eq!(details(json!({"ok":true})), None);
        assert_eq!(error_details(b"<html>"), None);
    }
}

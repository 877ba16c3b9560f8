//! Text the plugin prints: aligned tables, and API-server errors as the causes they carry (a
//! webhook denial as one `field: message` line per cause, not as a JSON blob).

use kube::core::Status;

/// Aligns rows into columns separated by three spaces (as kubectl does), no trailing spaces.
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let width: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = Vec::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < r.len() {
                let pad = width[c] - cell.chars().count() + 3;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push(line.trim_end().to_string());
    }
    out.join("\n")
}

/// The webhook a denial came from: `admission webhook "NAME" denied the request: ...`.
pub fn denying_webhook(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("admission webhook \"")?;
    let (name, tail) = rest.split_once('"')?;
    tail.starts_with(" denied the request").then_some(name)
}

/// An API-server error status as the user reads it: a header line, then each cause on a line of
/// its own (`field: message`), indented by two spaces.
pub fn status(s: &Status) -> String {
    let code = s.code;
    let reason = if s.reason.is_empty() {
        String::new()
    } else {
        format!(" {}", s.reason)
    };
    let causes = s
        .details
        .as_ref()
        .map(|d| d.causes.as_slice())
        .unwrap_or_default();
    if causes.is_empty() {
        return format!("{} ({code}{reason})", s.message);
    }
    let header = match denying_webhook(&s.message) {
        Some(w) => format!("denied by admission webhook \"{w}\" ({code}{reason}):"),
        None => format!("the API server refused the change ({code}{reason}):"),
    };
    let mut out = header;
    for c in causes {
        out.push_str("\n  ");
        if !c.field.is_empty() {
            out.push_str(&c.field);
            out.push_str(": ");
        }
        out.push_str(&c.message);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns() {
        let rows = vec![
            vec!["NAME".to_string(), "MAC".into(), "X".into()],
            vec!["eth10".to_string(), "-".into(), "".into()],
        ];
        assert_eq!(table(&rows), "NAME    MAC   X\neth10   -");
    }

    #[test]
    fn a_webhook_denial_is_its_causes() {
        let s: Status = serde_json::from_value(serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 403,
            "reason": "Forbidden",
            "message": "admission webhook \"validate.hotnic.io\" denied the request: hotnic: a: b; c: d",
            "details": {"causes": [
                {"field": "a", "message": "b", "reason": "FieldValueForbidden"},
                {"field": "c", "message": "d", "reason": "FieldValueForbidden"}]}
        }))
        .unwrap();
        assert_eq!(
            status(&s),
            "denied by admission webhook \"validate.hotnic.io\" (403 Forbidden):\n  a: b\n  c: d"
        );
        let plain: Status = serde_json::from_value(serde_json::json!({
            "kind": "Status", "status": "Failure", "code": 404, "reason": "NotFound",
            "message": "pods \"x\" not found"}))
        .unwrap();
        assert_eq!(status(&plain), "pods \"x\" not found (404 NotFound)");
    }
}

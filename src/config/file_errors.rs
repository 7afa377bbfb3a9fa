//! A TOML file's errors in plain words: the line a key is written on, and
//! serde's messages rewritten for people (`a whole number (not the string
//! "lots")`, `did you mean `upstream_timeout_ms`?`).

/// The 1-based line where the value of `key` (`alerts.error_rate`,
/// `routes[0].pattern`) is written in the TOML `text`.
pub(super) fn file_line(text: &str, key: &str) -> Option<usize> {
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    let mut item = doc.as_item();
    for part in key.split('.') {
        let (name, index) = match part.split_once('[') {
            Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        item = item.get(name)?;
        if let Some(i) = index {
            item = item.get(i)?;
        }
    }
    let start = item.span()?.start;
    Some(text[..start].lines().count().max(1) + usize::from(text[..start].ends_with('\n')))
}

/// serde's wording made plain: `invalid type: string "lots", expected u64`
/// becomes `a whole number (not the string "lots")`.
pub(super) fn plain_words(message: &str) -> String {
    let kind = |t: &str| -> String {
        match t.trim() {
            "u64" | "u32" | "u16" | "usize" | "u8" => "a whole number".into(),
            "i64" | "i32" => "an integer".into(),
            "f64" | "f32" => "a number".into(),
            "a boolean" => "true or false".into(),
            "a string" => "a quoted string".into(),
            other => other.to_string(),
        }
    };
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        if let Some((got, want)) = rest.split_once(", expected ") {
            return format!("{} (not the {got})", kind(want));
        }
    }
    if let Some(rest) = message.strip_prefix("invalid value: ") {
        if let Some((got, want)) = rest.split_once(", expected ") {
            // `integer `-5``: the value alone, and why it is out of range.
            let value = got.split('`').nth(1).unwrap_or(got);
            let unsigned = want.trim().starts_with('u');
            if unsigned && value.starts_with('-') {
                return format!("{}, 0 or more (not {value})", kind(want));
            }
            return format!("{} (not {value})", kind(want));
        }
    }
    if let Some(rest) = message.strip_prefix("unknown field ") {
        if let Some((field, known)) = rest.split_once(", expected ") {
            return unknown_key(field, known);
        }
    }
    message.to_string()
}

/// Where every key is described, named in the unknown-key message.
const KEYS_DOC: &str = "docs/configuration.md";

/// `unknown field `lisen`, expected one of `listen`, `upstream`…`: the
/// closest known key (as clap suggests flags: Jaro similarity above 0.7)
/// instead of the whole list.
fn unknown_key(field: &str, known: &str) -> String {
    let name = field.trim_matches('`');
    let closest = known
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|k| (strsim::jaro(name, k), k))
        .filter(|(score, _)| *score > 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match closest {
        Some((_, k)) => format!("a known key instead of `{name}`: did you mean `{k}`? (every key: {KEYS_DOC})"),
        None => format!("a known key instead of `{name}` (every key: {KEYS_DOC})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_key_names_the_closest_one() {
        let known = "one of `listen`, `upstream`, `upstream_timeout_ms`, `shutdown_grace_ms`";
        let m = plain_words(&format!("unknown field `upstream_timout_ms`, expected {known}"));
        assert_eq!(m, "a known key instead of `upstream_timout_ms`: did you mean `upstream_timeout_ms`? (every key: docs/configuration.md)");
        assert!(plain_words(&format!("unknown field `lisen`, expected {known}")).contains("did you mean `listen`?"));
        let far = plain_words(&format!("unknown field `zzz`, expected {known}"));
        assert_eq!(far, "a known key instead of `zzz` (every key: docs/configuration.md)");
    }

    #[test]
    fn numbers_out_of_range_say_why() {
        assert_eq!(plain_words("invalid value: integer `-5`, expected u64"), "a whole number, 0 or more (not -5)");
        assert_eq!(plain_words("invalid value: integer `300`, expected u8"), "a whole number (not 300)");
        assert_eq!(
            plain_words("invalid type: string \"lots\", expected u64"),
            "a whole number (not the string \"lots\")"
        );
    }
}

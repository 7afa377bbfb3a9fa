//! A statement's text with nothing it holds: every literal (strings in
//! any of PostgreSQL's forms, numbers, bit strings) becomes `$n`, a list
//! of them after `IN` becomes one `$n`, comments go (a comment can hold
//! anything), and a text cut off inside a literal or comment (PostgreSQL
//! keeps `track_activity_query_size` bytes) ends with its `$n`. Numbering
//! continues after the statement's own parameters, as `pg_stat_statements`
//! does. Identifiers, quoted or not, and keywords are kept. A plain string
//! holding a backslash ends the text there (whether `\'` closes it depends
//! on the session's `standard_conforming_strings`, which perfproxy cannot
//! see: everything from there on is one `$n`), and a `SET` keeps only its
//! name (`SET app.key = $1`: its value may be bare).

/// The longest normalised text kept (characters).
pub const MAX_CHARS: usize = 1024;
/// The most of a statement read (bytes): what lies past it is cut off.
const MAX_INPUT: usize = 8 * 1024;

/// One piece of the text: kept as written, or a literal (a placeholder).
#[derive(Debug, PartialEq)]
enum Piece<'a> {
    Text(&'a str),
    Literal,
}

/// `text` with every literal replaced by `$n`.
pub fn normalise(text: &str) -> String {
    let mut cut = text.len().min(MAX_INPUT);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let text = &text[..cut];
    if let Some(set) = set_value(text) {
        return set;
    }
    let pieces = pieces(text);
    let mut next = highest_parameter(&pieces) + 1;
    let mut out = String::with_capacity(text.len().min(MAX_CHARS));
    let mut i = 0;
    while i < pieces.len() {
        match pieces[i] {
            Piece::Literal => {
                out.push_str(&format!("${next}"));
                next += 1;
                i += 1;
            }
            Piece::Text(t) => {
                out.push_str(t);
                i += 1;
                if t.eq_ignore_ascii_case("in") {
                    if let Some(end) = literal_list(&pieces[i..]) {
                        out.push_str(&format!(" (${next})"));
                        next += 1;
                        i += end;
                    }
                }
            }
        }
        if out.len() > MAX_CHARS * 4 {
            break;
        }
    }
    let squeezed = squeeze(&out);
    match squeezed.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => squeezed[..cut].to_string(),
        None => squeezed,
    }
}

/// `SET [SESSION | LOCAL] name {= | TO} value`: the name kept, the value
/// `$1` (a bare word can be a secret).
fn set_value(text: &str) -> Option<String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    if !words.first()?.eq_ignore_ascii_case("set") {
        return None;
    }
    let mut kept = Vec::new();
    for word in words {
        if let Some((name, _)) = word.split_once('=') {
            kept.push(format!("{name} = $1"));
            return Some(kept.join(" ").replace("  = ", " = "));
        }
        kept.push(word.to_string());
        if word.eq_ignore_ascii_case("to") {
            kept.push("$1".into());
            return Some(kept.join(" "));
        }
    }
    // No value in sight (`SET ROLE x`, `SET TIME ZONE …`): all but the first words.
    let head: Vec<&str> = text.split_whitespace().take(2).collect();
    Some(format!("{} $1", head.join(" ")))
}

/// Runs of white space (comments left some) as one space, trimmed.
fn squeeze(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// After `IN`: `( literal , literal … )`, possibly with white space;
/// returns how many pieces it spans.
fn literal_list(pieces: &[Piece<'_>]) -> Option<usize> {
    let mut i = 0;
    let skip_space = |i: &mut usize| {
        while matches!(pieces.get(*i), Some(Piece::Text(t)) if t.trim().is_empty()) {
            *i += 1;
        }
    };
    skip_space(&mut i);
    if pieces.get(i) != Some(&Piece::Text("(")) {
        return None;
    }
    i += 1;
    loop {
        skip_space(&mut i);
        match pieces.get(i) {
            Some(Piece::Literal) => i += 1,
            Some(Piece::Text(t)) if is_parameter(t) => i += 1,
            _ => return None,
        }
        skip_space(&mut i);
        match pieces.get(i) {
            Some(Piece::Text(",")) => i += 1,
            Some(Piece::Text(")")) => return Some(i + 1),
            _ => return None,
        }
    }
}

fn is_parameter(t: &str) -> bool {
    t.len() > 1 && t.starts_with('$') && t[1..].bytes().all(|b| b.is_ascii_digit())
}

fn highest_parameter(pieces: &[Piece<'_>]) -> u32 {
    let number = |p: &Piece<'_>| match p {
        Piece::Text(t) if is_parameter(t) => t[1..].parse::<u32>().ok(),
        _ => None,
    };
    pieces.iter().filter_map(number).max().unwrap_or(0).min(1_000_000)
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$' || !c.is_ascii()
}

/// Splits `text` into kept pieces (words, punctuation, white space,
/// parameters, quoted identifiers) and literals; comments are dropped (a
/// space stands for each).
fn pieces(text: &str) -> Vec<Piece<'_>> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let rest = |from: usize| &text[from..];
    while i < b.len() {
        let c = rest(i).chars().next().expect("i is inside the text, on a character boundary");
        let start = i;
        match c {
            '-' if b.get(i + 1) == Some(&b'-') => {
                i = rest(i).find(['\n', '\r']).map_or(b.len(), |n| i + n);
                out.push(Piece::Text(" "));
            }
            '/' if b.get(i + 1) == Some(&b'*') => {
                i = block_comment_end(b, i);
                out.push(Piece::Text(" "));
            }
            '\'' => {
                i = quoted_end(b, i + 1, false);
                out.push(Piece::Literal);
            }
            '"' => {
                i = rest(i + 1).find('"').map_or(b.len(), |n| i + 1 + n + 1);
                out.push(Piece::Text(&text[start..i]));
            }
            '$' => match dollar_quote(rest(i)) {
                Some(tag) => {
                    let body = i + tag.len();
                    i = rest(body).find(tag).map_or(b.len(), |n| body + n + tag.len());
                    out.push(Piece::Literal);
                }
                None => {
                    i += 1;
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                    out.push(Piece::Text(&text[start..i]));
                }
            },
            c if c.is_ascii_digit() || (c == '.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) => {
                i = number_end(b, i);
                out.push(Piece::Literal);
            }
            c if is_ident(c) => {
                // A prefixed string: E'…', B'…', X'…', N'…', U&'…'.
                let word_end = start + rest(start).find(|c: char| !is_ident(c)).unwrap_or(b.len() - start);
                let word = &text[start..word_end];
                let prefixed = matches!(word.to_ascii_lowercase().as_str(), "e" | "b" | "x" | "n");
                if prefixed && b.get(word_end) == Some(&b'\'') {
                    i = quoted_end(b, word_end + 1, word.eq_ignore_ascii_case("e"));
                    out.push(Piece::Literal);
                } else if word.eq_ignore_ascii_case("u") && rest(word_end).starts_with("&'") {
                    i = quoted_end(b, word_end + 2, false);
                    out.push(Piece::Literal);
                } else {
                    i = word_end;
                    out.push(Piece::Text(word));
                }
            }
            c => {
                i += c.len_utf8();
                out.push(Piece::Text(&text[start..i]));
            }
        }
    }
    out
}

/// Past the closing quote of a string whose body starts at `i` (`''` is a
/// quote inside; with `backslash`, `\` escapes the next byte; without, a
/// backslash may still escape under `standard_conforming_strings = off`,
/// so the string runs to the end of the text). The end of the text when
/// it never closes.
fn quoted_end(b: &[u8], mut i: usize, backslash: bool) -> usize {
    while i < b.len() {
        match b[i] {
            b'\\' if backslash => i += 2,
            b'\\' => return b.len(),
            b'\'' if b.get(i + 1) == Some(&b'\'') => i += 2,
            b'\'' => return i + 1,
            _ => i += 1,
        }
    }
    b.len()
}

/// Past the end of a (nested) block comment starting at `i`.
fn block_comment_end(b: &[u8], mut i: usize) -> usize {
    let mut depth = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            depth += 1;
            i += 2;
        } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    b.len()
}

/// `$tag$` or `$$` at the start of `s`: the opening tag.
fn dollar_quote(s: &str) -> Option<&str> {
    let b = s.as_bytes();
    if b.get(1).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    let end = s[1..].find('$')? + 1;
    let tag = &s[1..end];
    let valid = tag.chars().all(|c| c.is_alphanumeric() || c == '_' || !c.is_ascii());
    valid.then(|| &s[..=end])
}

/// Past a numeric literal starting at `i`: digits (and `_`), a fraction,
/// an exponent; `0x…`, `0o…`, `0b…`.
fn number_end(b: &[u8], mut i: usize) -> usize {
    if b[i] == b'0' && b.get(i + 1).is_some_and(|c| matches!(c.to_ascii_lowercase(), b'x' | b'o' | b'b')) {
        i += 2;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
        }
        return i;
    }
    while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'_' || b[i] == b'.') {
        i += 1;
    }
    if i < b.len() && (b[i] | 0x20) == b'e' {
        let mut j = i + 1;
        if j < b.len() && (b[j] == b'+' || b[j] == b'-') {
            j += 1;
        }
        if j < b.len() && b[j].is_ascii_digit() {
            i = j;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
        }
    }
    // Letters glued to a number are still that number's (never shown).
    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::normalise;

    #[test]
    fn literals_become_placeholders_numbered_after_the_parameters() {
        let cases = [
            ("SELECT pg_sleep(5)", "SELECT pg_sleep($1)"),
            (
                "select * from users where email = 'a@b.c' and id = $1",
                "select * from users where email = $2 and id = $1",
            ),
            ("SELECT 'it''s', E'a\\'b', B'0101', X'1F', N'n', U&'d\\0061t'", "SELECT $1, $2, $3, $4, $5, $6"),
            ("SELECT $body$ secret ' text $body$, $$x$$", "SELECT $1, $2"),
            ("SELECT -1.5e-3, .5, 0x1F, 1_000, t1.c2 FROM t1", "SELECT -$1, $2, $3, $4, t1.c2 FROM t1"),
            ("SELECT \"Weird 42 'x'\" FROM \"T\"", "SELECT \"Weird 42 'x'\" FROM \"T\""),
            (
                "SELECT 1 -- password 'hunter2'\nFROM t /* token 99 /* nested */ more */ WHERE x = 2",
                "SELECT $1 FROM t WHERE x = $2",
            ),
            (
                "SELECT * FROM t WHERE id IN (1, 2, 3) AND k in ('a','b') AND z IN (SELECT 4)",
                "SELECT * FROM t WHERE id IN ($1) AND k in ($2) AND z IN (SELECT $3)",
            ),
            ("SELECT * FROM t WHERE id IN ($1, $2, 7)", "SELECT * FROM t WHERE id IN ($3)"),
            ("INSERT INTO secrets VALUES ('abc", "INSERT INTO secrets VALUES ($1"),
            ("SELECT 'x' /* cut off inside a comment 'hunter2", "SELECT $1"),
            ("SELECT interval '1 day', 'x'::text, émoji_col FROM t", "SELECT interval $1, $2::text, émoji_col FROM t"),
            ("UPDATE u SET note = 'it\\'s my password hunter2' WHERE id = 1", "UPDATE u SET note = $1"),
            ("SELECT 1 --x\r, 'line1\nhunter2 secret' FROM t", "SELECT $1 , $2 FROM t"),
            ("SET app.tenant_key = sk_live_abc", "SET app.tenant_key = $1"),
            ("set local statement_timeout to '5s'", "set local statement_timeout to $1"),
            ("SET app.key=sk_live", "SET app.key = $1"),
            ("SET ROLE admin", "SET ROLE $1"),
        ];
        for (text, want) in cases {
            assert_eq!(normalise(text), want, "{text}");
        }
    }

    #[test]
    fn nothing_of_a_literal_survives_any_cut() {
        let text = "UPDATE accounts SET token = E'tok\\'en-SECRET', pin = 4242, note = $q$SECRET$q$ WHERE name IN ('SECRET', 'x') -- SECRET";
        for cut in 0..=text.len() {
            if !text.is_char_boundary(cut) {
                continue;
            }
            let out = normalise(&text[..cut]);
            for piece in ["SEC", "CRET", "424", "en-"] {
                assert!(!out.contains(piece), "{cut}: {out}");
            }
        }
    }
}

//! Keeping secrets out of output: URLs lose their password before they are
//! logged, printed or served.

/// `scheme://user:secret@host/...` → `scheme://user:***@host/...`.
pub fn url(u: &str) -> String {
    let Some((scheme, rest)) = u.split_once("://") else {
        return u.to_string();
    };
    let (authority, tail) = match rest.find(['/', '?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{tail}")
            } else {
                format!("{scheme}://{user}@{host}{tail}")
            }
        }
        None => u.to_string(),
    }
}

/// Masks the password of every URL inside free text (error messages).
pub fn text(t: &str) -> String {
    t.split(' ').map(|w| if w.contains("://") { url(w) } else { w.to_string() }).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_masked() {
        assert_eq!(super::url("postgres://u:p@h:5/db?x=1"), "postgres://u:***@h:5/db?x=1");
        assert_eq!(super::url("redis://:pw@h"), "redis://:***@h");
        assert_eq!(super::url("redis://h:6379"), "redis://h:6379");
        assert_eq!(super::url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(super::text("failed: postgres://u:p@h/db refused"), "failed: postgres://u:***@h/db refused");
    }
}

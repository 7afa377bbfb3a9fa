//! Text for people, kept free of secrets: URLs lose their password before
//! they are logged, printed or served, and an error reads as its causes
//! joined ([`chain`]).

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

/// An error and every cause under it, `outer: inner: innermost`, for
/// people: a cause already stated by the text above it is not repeated
/// ("db error: database \"x\" does not exist", "error connecting to
/// server: Connection refused (os error 111)").
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let c = cause.to_string();
        if !c.is_empty() && !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
        next = cause.source();
    }
    text
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

    #[test]
    fn every_cause_is_kept_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        #[derive(Debug, thiserror::Error)]
        #[error("tcp connect error")]
        struct Connect(#[source] std::io::Error);
        #[derive(Debug, thiserror::Error)]
        #[error("client error: tcp connect error")]
        struct Client(#[source] Connect);
        let e = Client(Connect(io));
        assert_eq!(super::chain(&e), "client error: tcp connect error: connection refused");
    }
}

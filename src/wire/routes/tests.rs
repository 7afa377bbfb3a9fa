//! Unit tests of `routes`.

use super::*;

fn label(t: &RouteTable, m: Method, p: &str) -> String {
    let mut c = RouteCache::default();
    t.name(t.resolve(&m, p, &mut c)).to_string()
}

#[test]
fn normalises_identifiers() {
    let t = RouteTable::new(vec![], 100, None);
    assert_eq!(label(&t, Method::GET, "/api/users/42/orders/9f1c2b3a4d5e"), "GET /api/users/:id/orders/:id");
    assert_eq!(label(&t, Method::GET, "/a/550e8400-e29b-41d4-a716-446655440000"), "GET /a/:id");
    assert_eq!(label(&t, Method::DELETE, "/t/eyJhbGciOiJIUzI1NiJ9xyz123"), "DELETE /t/:id");
    assert_eq!(label(&t, Method::GET, "/api/documents/search"), "GET /api/documents/search");
    assert_eq!(label(&t, Method::GET, "/"), "GET /");
    assert_eq!(label(&t, Method::GET, "/v1/deadbeef/facade"), "GET /v1/deadbeef/facade");
    assert_eq!(label(&t, Method::from_bytes(b"BREW").unwrap(), "/pot"), "OTHER /pot");
}

#[test]
fn grpc_methods_are_their_own_labels() {
    let t = RouteTable::new(vec![], 100, None);
    let service = "/acme.payments.v1beta2.PaymentService/Charge";
    let grpc = |path| t.name(t.resolve_as(&Method::POST, path, true, &mut RouteCache::default())).to_string();
    assert_eq!(grpc(service), format!("POST {service}"));
    // The same path as plain HTTP is normalised; a longer gRPC path too.
    assert_eq!(label(&t, Method::POST, service), "POST /:id/Charge");
    assert_eq!(grpc("/prefix/12345/Method"), "POST /prefix/:id/Method");
    assert_eq!(grpc("/users/11111"), "POST /users/:id", "no package: normalised");
}

#[test]
fn configured_patterns_match_in_order() {
    let pats = ["GET /api/users/:id", "/api/documents/*", "/api/users/:id"]
        .iter()
        .map(|p| RoutePattern::parse(p).unwrap())
        .collect();
    let t = RouteTable::new(pats, 100, None);
    assert_eq!(label(&t, Method::GET, "/api/users/alice"), "GET /api/users/:id");
    assert_eq!(label(&t, Method::PUT, "/api/users/alice"), "PUT /api/users/:id");
    assert_eq!(label(&t, Method::POST, "/api/documents/a/b/c"), "POST /api/documents/*");
    assert_eq!(label(&t, Method::POST, "/api/documents"), "POST /api/documents");
    assert_eq!(label(&t, Method::GET, "/api/users/"), "GET /api/users/");
}

#[test]
fn a_workers_cache_follows_a_reload() {
    let t = RouteTable::new(vec![], 100, None);
    let mut cache = RouteCache::default();
    let before = t.resolve(&Method::GET, "/api/items/x", &mut cache);
    assert_eq!(&*t.name(before), "GET /api/items/x");
    t.set_patterns(vec![RoutePattern::parse("GET /api/items/:name").unwrap()]);
    let after = t.resolve(&Method::GET, "/api/items/x", &mut cache);
    assert_eq!(&*t.name(after), "GET /api/items/:name");
}

#[test]
fn a_worker_resolves_a_repeated_path_as_the_first_time() {
    let t = RouteTable::new(vec![RoutePattern::parse("GET /api/items/:name").unwrap()], 100, None);
    let mut c = RouteCache::default();
    let service = "/acme.v1.Svc/Get";
    for _ in 0..3 {
        let name =
            |m: Method, p: &str, grpc: bool, c: &mut RouteCache| t.name(t.resolve_as(&m, p, grpc, c)).to_string();
        assert_eq!(name(Method::GET, "/static/app.js", false, &mut c), "GET /static/app.js");
        assert_eq!(name(Method::GET, "/users/42", false, &mut c), "GET /users/:id");
        assert_eq!(name(Method::GET, "/api/items/x", false, &mut c), "GET /api/items/:name");
        assert_eq!(name(Method::POST, "/api/items/x", false, &mut c), "POST /api/items/x");
        assert_eq!(name(Method::POST, service, true, &mut c), format!("POST {service}"));
        assert_eq!(name(Method::POST, "/orders", true, &mut c), "POST /orders");
        assert_eq!(name(Method::POST, "/orders", false, &mut c), "POST /orders");
    }
}

#[test]
fn other_methods_are_told_apart_by_patterns_whatever_came_first() {
    let t = RouteTable::new(vec![RoutePattern::parse("PROPFIND /dav/:x").unwrap()], 100, None);
    let mut c = RouteCache::default();
    let name =
        |m: &[u8], c: &mut RouteCache| t.name(t.resolve(&Method::from_bytes(m).unwrap(), "/dav/abc", c)).to_string();
    assert_eq!(name(b"MKCOL", &mut c), "OTHER /dav/abc");
    assert_eq!(name(b"PROPFIND", &mut c), "OTHER /dav/:x");
    assert_eq!(name(b"PROPFIND", &mut c), "OTHER /dav/:x");
    assert_eq!(name(b"MKCOL", &mut c), "OTHER /dav/abc");
}

#[test]
fn long_paths_are_resolved_but_not_kept() {
    let t = RouteTable::new(vec![], 100, None);
    let mut c = RouteCache::default();
    let long = format!("/{}", "a".repeat(VERBATIM_LONGEST + 10));
    let short = "/static/app.js";
    t.resolve(&Method::GET, &long, &mut c);
    t.resolve(&Method::GET, short, &mut c);
    assert_eq!(c.verbatim.len(), 1);
    assert!(c.verbatim.contains_key(format!("GET {short}").as_str()));
}

#[test]
fn bad_patterns_are_refused() {
    for bad in ["api/users", "get /x", "/a/*/b", "/a/:", "GET /x?y"] {
        assert!(RoutePattern::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn label_table_is_bounded() {
    let t = RouteTable::new(vec![], 3, None);
    let mut c = RouteCache::default();
    for p in ["/a", "/b", "/c", "/d", "/e"] {
        t.resolve(&Method::GET, p, &mut c);
    }
    t.resolve(&Method::POST, "/f", &mut c);
    let names: Vec<String> = t.names().iter().map(|n| n.to_string()).collect();
    assert_eq!(names, ["GET /a", "GET /b", "GET /c", "GET OTHER", "POST OTHER"]);
    // A worker cache answers the same ids the table does.
    let again = t.resolve(&Method::GET, "/e", &mut c);
    assert_eq!(&*t.name(again), "GET OTHER");
}

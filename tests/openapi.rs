//! The OpenAPI document (`GET /api/v1/openapi.json`) against the routes the
//! app registers and the answers the running server gives: it is OpenAPI
//! 3.1, served without a token; every registered route and method is in it
//! and nothing else is; every `$ref` and link resolves; every error answer is
//! the envelope; and the server asks for a token exactly where the document
//! says it does.

mod support;

use actix_web::{web, App, HttpRequest, HttpResponse};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use support::{Api, Backend, TestApp};

/// Routes registered outside the document, besides the dashboard's static
/// files: Prometheus text, and the WebSocket upgrades (a protocol OpenAPI
/// does not describe).
const UNDOCUMENTED: &[&str] = &["/metrics", "/ws/v1", "/ws/v1/watchlists/{id}"];

/// Every method a route could be registered for.
const METHODS: &[Method] = &[
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
    Method::TRACE,
];

const PROBE: &str = "/__registered_routes";

/// The full patterns of every route an app registers, found with actix's
/// own router: actix lists no routes, so each pattern string its resource
/// map holds (read from its `Debug` form) is combined with up to two others
/// (scopes nest them) and kept when the router matches a path made from it
/// to exactly that pattern.
async fn registered_by(routes: fn(&mut web::ServiceConfig)) -> BTreeSet<String> {
    async fn dump(req: HttpRequest) -> HttpResponse {
        let map = req.resource_map();
        let debug = format!("{map:?}");
        let mut parts: BTreeSet<String> = BTreeSet::from([String::new()]);
        let mut rest = debug.as_str();
        while let Some(at) = rest.find("Single(\"") {
            rest = &rest[at + "Single(\"".len()..];
            let end = rest.find("\")").expect("a pattern ends");
            parts.insert(rest[..end].to_owned());
            rest = &rest[end..];
        }
        let mut found = BTreeSet::new();
        for a in &parts {
            for b in &parts {
                for c in &parts {
                    let pattern = format!("{a}{b}{c}");
                    if pattern.is_empty() || pattern == PROBE {
                        continue;
                    }
                    let path: String = pattern
                        .split('/')
                        .map(|seg| if seg.starts_with('{') { "1" } else { seg })
                        .collect::<Vec<_>>()
                        .join("/");
                    if map.match_pattern(&path).as_deref() == Some(pattern.as_str()) {
                        found.insert(pattern);
                    }
                }
            }
        }
        HttpResponse::Ok().json(found)
    }
    let app = actix_web::test::init_service(
        App::new()
            .configure(routes)
            .route(PROBE, web::get().to(dump)),
    )
    .await;
    let req = actix_web::test::TestRequest::get().uri(PROBE).to_request();
    actix_web::test::call_and_read_body_json(&app, req).await
}

/// A concrete path for a pattern: every parameter a plausible value.
fn path_of(pattern: &str) -> String {
    pattern
        .replace("{symbol}", "AAPL")
        .split('/')
        .map(|seg| if seg.starts_with('{') { "1" } else { seg })
        .collect::<Vec<_>>()
        .join("/")
}

/// What the server answers `method` on `pattern`: status, `Allow`, body.
async fn probe(
    app: &TestApp,
    method: &Method,
    pattern: &str,
    token: Option<&str>,
) -> (u16, Option<String>, Value) {
    let mut req = app
        .client()
        .request(method.clone(), app.url(&path_of(pattern)));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if [Method::POST, Method::PUT, Method::PATCH].contains(method) {
        req = req.json(&json!({}));
    }
    let res = req.send().await.expect("request sent");
    let status = res.status().as_u16();
    let allow = res
        .headers()
        .get("allow")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = res.json().await.unwrap_or(Value::Null);
    (status, allow, body)
}

async fn document(app: &TestApp) -> Value {
    let res = app
        .client()
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "served without a token");
    assert_eq!(res.headers()["content-type"], "application/json");
    res.json().await.unwrap()
}

/// The document's operations: path -> method (upper case) -> operation.
fn operations(doc: &Value) -> BTreeMap<String, BTreeMap<String, Value>> {
    doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .map(|(path, item)| {
            let ops = item
                .as_object()
                .unwrap()
                .iter()
                .filter(|(k, _)| METHODS.iter().any(|m| m.as_str().eq_ignore_ascii_case(k)))
                .map(|(k, op)| (k.to_uppercase(), op.clone()))
                .collect();
            (path.clone(), ops)
        })
        .collect()
}

fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r.clone());
            }
            m.values().for_each(|v| refs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[actix_web::test]
async fn every_registered_route_is_documented_and_nothing_else() {
    let registered = registered_by(quotecast::api::routes).await;
    let dashboard = registered_by(quotecast::dashboard::routes).await;
    // The enumeration itself works: it finds routes of every kind.
    for known in [
        "/healthz",
        "/api/v1/me",
        "/api/v1/watchlists/{id}/items/{symbol}",
        "/",
    ] {
        assert!(
            registered.contains(known),
            "{known} not found in {registered:?}"
        );
    }
    let undocumented: BTreeSet<String> = UNDOCUMENTED
        .iter()
        .map(|s| s.to_string())
        .chain(dashboard)
        .collect();

    let app = TestApp::spawn(Backend::Sqlite).await;
    let doc = document(&app).await;
    let ops = operations(&doc);
    let documented: BTreeSet<String> = ops.keys().cloned().collect();
    let expected: BTreeSet<String> = registered.difference(&undocumented).cloned().collect();
    assert_eq!(
        documented, expected,
        "documented paths vs registered routes"
    );
    assert!(
        undocumented.is_subset(&registered),
        "{undocumented:?} vs {registered:?}"
    );

    // Methods: a registered one is answered (anything but 405), any other
    // is 405 with `Allow` naming exactly the documented ones.
    let token = app.admin_token().to_owned();
    for pattern in &registered {
        let want: BTreeSet<String> = match ops.get(pattern) {
            Some(methods) => methods.keys().cloned().collect(),
            // Outside the document, every route is a GET.
            None => BTreeSet::from(["GET".to_owned()]),
        };
        for method in METHODS {
            let (status, allow, body) = probe(&app, method, pattern, Some(&token)).await;
            let routed = status != 405;
            assert_eq!(
                routed,
                want.contains(method.as_str()),
                "{method} {pattern}: {status} {body}"
            );
            if !routed {
                let allow: BTreeSet<String> = allow
                    .expect("405 has Allow")
                    .split(", ")
                    .map(str::to_owned)
                    .collect();
                assert_eq!(allow, want, "Allow of {method} {pattern}");
                if *method != Method::HEAD {
                    assert_eq!(body["error"]["code"], "method_not_allowed", "{body}");
                }
            }
        }
    }
}

#[actix_web::test]
async fn the_document_is_openapi_3_1_and_consistent() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let doc = document(&app).await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        doc["openapi"]
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"],
        json!({"type": "http", "scheme": "bearer", "description": doc["components"]["securitySchemes"]["bearer"]["description"]})
    );
    let schemas = doc["components"]["schemas"].as_object().unwrap();

    // Every reference resolves.
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in &all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected $ref {r}"));
        assert!(schemas.contains_key(name), "dangling $ref {r}");
    }

    let ops = operations(&doc);
    let ids: Vec<&str> = ops
        .values()
        .flat_map(|m| m.values())
        .map(|op| {
            op["operationId"]
                .as_str()
                .expect("every operation has an id")
        })
        .collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "operation ids are unique: {ids:?}");

    for (path, methods) in &ops {
        for (method, op) in methods {
            let what = format!("{method} {path}");
            let responses = op["responses"].as_object().unwrap();
            let has = |status: &str| responses.contains_key(status);
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{what}: no success answer"
            );
            // Every error answer is the envelope.
            for (status, response) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(
                        response["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorBody",
                        "{what} {status}"
                    );
                }
            }
            if op.get("security").is_some() {
                assert_eq!(op["security"], json!([{"bearer": []}]), "{what}");
                for status in ["401", "500", "503"] {
                    assert!(has(status), "{what}: no {status}");
                }
            }
            if op.get("requestBody").is_some() {
                assert_eq!(op["requestBody"]["required"], true, "{what}");
                for status in ["400", "413", "422"] {
                    assert!(has(status), "{what}: no {status}");
                }
            }
            let path_params = op["parameters"]
                .as_array()
                .map(|ps| ps.iter().filter(|p| p["in"] == "path").count())
                .unwrap_or(0);
            assert_eq!(
                path_params,
                path.matches('{').count(),
                "{what}: every path parameter is described"
            );
            if path_params > 0 {
                assert!(has("404") || has("422"), "{what}: no answer for a bad id");
            }
            // Links name operations that exist, the OpenAPI way.
            for (status, response) in responses {
                for (name, link) in response["links"].as_object().into_iter().flatten() {
                    let target = link["operationId"]
                        .as_str()
                        .unwrap_or_else(|| panic!("{what} {status} link {name}: {link}"));
                    assert!(unique.contains(target), "{what}: link to {target}");
                }
            }
        }
    }

    // The server asks for a token exactly where the document says it does.
    for (path, methods) in &ops {
        for (method, op) in methods {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let (status, _, body) = probe(&app, &method, path, None).await;
            if op.get("security").is_some() {
                assert_eq!(status, 401, "{method} {path} without a token: {body}");
            } else {
                assert_eq!(status, 200, "{method} {path} without a token: {body}");
            }
        }
    }
}

/// A route that exists answers a wrong method 405 with `Allow`; a path that
/// is no route is still 404.
#[actix_web::test]
async fn wrong_methods_are_405_with_allow() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let (s, allow, body) = probe(&app, &Method::PUT, "/api/v1/watchlists/{id}", None).await;
    assert_eq!(s, 405, "{body}");
    assert_eq!(allow.as_deref(), Some("GET, DELETE, PATCH"));
    assert_eq!(body["error"]["code"], "method_not_allowed");
    let (s, allow, body) = probe(&app, &Method::POST, "/api/v1/nothing-here", None).await;
    assert_eq!((s, allow), (404, None), "{body}");
    assert_eq!(body["error"]["code"], "not_found");
}

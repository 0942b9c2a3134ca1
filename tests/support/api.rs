//! The REST API as tests call it, on any running server: a [`super::TestApp`]
//! in this process, or a `quotecast` process of a cluster test
//! ([`super::cluster::Node`]). A server gives its [`Http`] (address, client,
//! admin token); requests, the verbs and the typed calls (watchlists, items,
//! admin) are built on it, so every test spells a call the same way
//! whatever it runs against.

use reqwest::Method;
use serde_json::{json, Value};

/// A request body: JSON, or raw text sent as JSON (for malformed input).
pub enum Body {
    Json(Value),
    Raw(String),
}

/// The `error.code` of an error answer; panics when `body` is not one.
pub fn code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error body: {body}"))
}

/// A server as tests reach it: its base URL (`http://host:port`), an HTTP
/// client, and the token of an admin of it.
pub struct Http {
    pub base: String,
    pub client: reqwest::Client,
    pub admin_token: String,
}

/// The calls; a server implements [`Api::http`], the rest comes with it.
pub trait Api {
    fn http(&self) -> &Http;

    fn base(&self) -> &str {
        &self.http().base
    }

    fn client(&self) -> &reqwest::Client {
        &self.http().client
    }

    fn admin_token(&self) -> &str {
        &self.http().admin_token
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    /// One request with an optional bearer token: the status and the JSON
    /// answer (`Null` when empty); panics when the answer is not JSON.
    async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Body>,
    ) -> (u16, Value) {
        let mut req = self.client().request(method.clone(), self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req = match body {
            Some(Body::Json(v)) => req.json(&v),
            Some(Body::Raw(s)) => req.header("content-type", "application/json").body(s),
            None => req,
        };
        let res = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {}: {e}", self.url(path)));
        let status = res.status().as_u16();
        let text = res.text().await.unwrap_or_default();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|_| panic!("{method} {path}: answer is not JSON: {text:?}"))
        };
        (status, value)
    }

    async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.request(Method::GET, path, Some(token), None).await
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.request(Method::POST, path, Some(token), Some(Body::Json(body)))
            .await
    }

    async fn patch(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.request(Method::PATCH, path, Some(token), Some(Body::Json(body)))
            .await
    }

    async fn delete(&self, path: &str, token: &str) -> (u16, Value) {
        self.request(Method::DELETE, path, Some(token), None).await
    }

    /// An admin endpoint read with the admin token; panics unless 200.
    async fn admin(&self, path: &str) -> Value {
        let (status, body) = self.get(path, self.admin_token()).await;
        assert_eq!(status, 200, "{path}: {body}");
        body
    }

    /// Creates a watchlist and returns its id.
    async fn watchlist(&self, token: &str, name: &str, public: bool, items: Value) -> i64 {
        let (status, body) = self
            .post(
                "/api/v1/watchlists",
                token,
                json!({"name": name, "is_public": public, "items": items}),
            )
            .await;
        assert_eq!(status, 201, "create watchlist: {body}");
        body["id"].as_i64().unwrap()
    }

    /// `PATCH /api/v1/watchlists/{id}`.
    async fn patch_watchlist(&self, token: &str, id: i64, body: Value) -> (u16, Value) {
        self.patch(&format!("/api/v1/watchlists/{id}"), token, body)
            .await
    }

    /// `DELETE /api/v1/watchlists/{id}`.
    async fn delete_watchlist(&self, token: &str, id: i64) -> (u16, Value) {
        self.delete(&format!("/api/v1/watchlists/{id}"), token)
            .await
    }

    /// `POST /api/v1/watchlists/{id}/items`.
    async fn add_item(&self, token: &str, id: i64, item: Value) -> (u16, Value) {
        self.post(&format!("/api/v1/watchlists/{id}/items"), token, item)
            .await
    }

    /// `PATCH /api/v1/watchlists/{id}/items/{symbol}`.
    async fn patch_item(&self, token: &str, id: i64, symbol: &str, body: Value) -> (u16, Value) {
        let path = format!("/api/v1/watchlists/{id}/items/{symbol}");
        self.patch(&path, token, body).await
    }

    /// `DELETE /api/v1/watchlists/{id}/items/{symbol}`.
    async fn delete_item(&self, token: &str, id: i64, symbol: &str) -> (u16, Value) {
        let path = format!("/api/v1/watchlists/{id}/items/{symbol}");
        self.delete(&path, token).await
    }

    /// `GET /api/v1/quotes` of these symbols.
    async fn quotes<S: AsRef<str>>(&self, token: &str, symbols: &[S]) -> (u16, Value) {
        let symbols: Vec<&str> = symbols.iter().map(AsRef::as_ref).collect();
        let path = format!("/api/v1/quotes?symbols={}", symbols.join(","));
        self.get(&path, token).await
    }

    /// `DELETE /admin/v1/sessions/{session}`: kicks it (if `token` is an
    /// admin's).
    async fn kick(&self, token: &str, session: u64) -> (u16, Value) {
        self.delete(&format!("/admin/v1/sessions/{session}"), token)
            .await
    }

    /// `POST /admin/v1/workers/{worker}/refresh`: fetches its symbols now
    /// (if `token` is an admin's).
    async fn refresh(&self, token: &str, worker: i64) -> (u16, Value) {
        let path = format!("/admin/v1/workers/{worker}/refresh");
        self.request(Method::POST, &path, Some(token), None).await
    }
}

//! The web dashboard: three static files embedded in the binary, so
//! `cargo run --release` serves it with no front-end build.

use actix_web::{http::header, web, HttpResponse};

const INDEX_HTML: &str = include_str!("../static/index.html");
const APP_JS: &str = include_str!("../static/app.js");
const STYLE_CSS: &str = include_str!("../static/style.css");

fn asset(body: &'static str, content_type: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        // The page talks only to its own origin.
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; style-src 'self'; script-src 'self'",
        ))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(body)
}

async fn index() -> HttpResponse {
    asset(INDEX_HTML, "text/html; charset=utf-8")
}

async fn app_js() -> HttpResponse {
    asset(APP_JS, "text/javascript; charset=utf-8")
}

async fn style_css() -> HttpResponse {
    asset(STYLE_CSS, "text/css; charset=utf-8")
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(index))
        .route("/index.html", web::get().to(index))
        .route("/app.js", web::get().to(app_js))
        .route("/style.css", web::get().to(style_css));
}

//! The web dashboard: static files embedded in the binary, so
//! `cargo run --release` serves it with no front-end build. `index.html`
//! loads `app.js` as an ES module, which imports the others.
//!
//! Every answer carries the security headers of the contract: a
//! Content-Security-Policy that allows only this origin's own scripts and
//! styles (nothing inline, no `eval`), `X-Content-Type-Options: nosniff`
//! and `Referrer-Policy: no-referrer`.

use actix_web::{http::header, web, HttpResponse};

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Path, body and content type of every file of the dashboard.
const ASSETS: [(&str, &str, &str); 10] = [
    ("/", include_str!("../static/index.html"), HTML),
    ("/index.html", include_str!("../static/index.html"), HTML),
    ("/app.js", include_str!("../static/app.js"), JS),
    ("/alerts.js", include_str!("../static/alerts.js"), JS),
    ("/api.js", include_str!("../static/api.js"), JS),
    ("/charts.js", include_str!("../static/charts.js"), JS),
    (
        "/connection.js",
        include_str!("../static/connection.js"),
        JS,
    ),
    ("/dom.js", include_str!("../static/dom.js"), JS),
    ("/panel.js", include_str!("../static/panel.js"), JS),
    ("/style.css", include_str!("../static/style.css"), CSS),
];

/// The page talks only to its own origin: scripts, styles and sockets from
/// it, no plugins, no framing, forms posted nowhere else. `connect-src
/// 'self'` covers `ws:`/`wss:` to the same host (CSP Level 3).
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

fn asset(body: &'static str, content_type: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .body(body)
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    for (path, body, content_type) in ASSETS {
        cfg.route(
            path,
            web::get().to(move || async move { asset(body, content_type) }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The markup has nothing the policy would block: no inline script, no
    /// `style` attribute or element, no `on...=` handler, no `javascript:`
    /// URL. (The browser tests also watch for CSP violations at run time.)
    #[test]
    fn the_page_has_nothing_inline() {
        let html = ASSETS[0].1.to_ascii_lowercase();
        let mut rest = html.as_str();
        while let Some(at) = rest.find("<script") {
            let tag_end = rest[at..].find('>').expect("closed tag") + at;
            assert!(
                rest[at..tag_end].contains(" src="),
                "inline script: {}",
                &rest[at..tag_end]
            );
            assert!(
                rest[tag_end + 1..].starts_with("</script>"),
                "a script with a src has no body"
            );
            rest = &rest[tag_end..];
        }
        assert!(!html.contains("<style"), "inline <style>");
        assert!(!html.contains(" style="), "style attribute");
        assert!(!html.contains("javascript:"), "javascript: URL");
        let handler = html
            .split(|c: char| c.is_whitespace())
            .find(|w| w.starts_with("on") && w.contains('='));
        assert_eq!(handler, None, "inline event handler");
    }

    /// Scripts never write markup or styles as text (the policy would block
    /// inline styles, and markup from data is how injection happens).
    #[test]
    fn scripts_build_the_dom_without_markup_or_inline_styles() {
        for (path, body, content_type) in ASSETS {
            if content_type != JS {
                continue;
            }
            for banned in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                ".style.",
                "'style'",
                "eval(",
                "new Function",
            ] {
                assert!(!body.contains(banned), "{path} uses {banned}");
            }
        }
    }

    #[test]
    fn the_policy_allows_nothing_inline() {
        let csp = CONTENT_SECURITY_POLICY;
        assert!(!csp.contains("unsafe"), "{csp}");
        for directive in [
            "script-src 'self'",
            "style-src 'self'",
            "default-src 'self'",
        ] {
            assert!(csp.contains(directive), "{directive} missing from {csp}");
        }
    }
}

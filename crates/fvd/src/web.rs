//! The web console's static files, embedded at build time (see `build.rs`): `GET /` is its
//! `index.html` (`POST /` stays XML-RPC), `GET /assets/...` its scripts and styles. Vite
//! names assets by a hash of their content, so they are cached for a year; `index.html`
//! is revalidated every time, so a new fvd's console is picked up at once.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));
}

/// What fvd serves at `/` when it was built without the console.
const PLACEHOLDER: &str = "<!doctype html>
<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Ferrovisor</title>
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"></head>
<body style=\"font-family: sans-serif; max-width: 40em; margin: 2em auto; padding: 0 1em\">
<h1>Ferrovisor</h1>
<p>The XenAPI is served here: XML-RPC at <code>/</code>, JSON-RPC at <code>/jsonrpc</code>.</p>
<p>This fvd was built without its web console. Build it with
<code>scripts/build-web.sh</code> (Node.js and npm), then build fvd again:
the console in <code>web/dist</code> is embedded into the binary.</p>
</body></html>
";

fn asset(path: &str) -> Option<&'static [u8]> {
    embedded::ASSETS
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, bytes)| *bytes)
}

/// Whether the console was embedded.
pub fn embedded() -> bool {
    asset("index.html").is_some()
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json" | "map") => "application/json",
        Some("woff2") => "font/woff2",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

pub fn routes() -> Router {
    Router::new().route("/assets/{*path}", get(assets))
}

/// `GET /`.
pub async fn index() -> Response {
    let body: &'static [u8] = asset("index.html").unwrap_or(PLACEHOLDER.as_bytes());
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; connect-src 'self'; img-src 'self' data:; \
                 style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

async fn assets(Path(path): Path<String>) -> Response {
    let full = format!("assets/{path}");
    match asset(&full) {
        Some(body) => (
            [
                (header::CONTENT_TYPE, content_type(&full)),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            body,
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            format!("no asset {path:?}\n"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_follow_the_extension() {
        assert_eq!(
            content_type("assets/index-abc.js"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(
            content_type("assets/index-abc.css"),
            "text/css; charset=utf-8"
        );
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("assets/x"), "application/octet-stream");
    }

    #[test]
    fn the_table_has_index_html_or_nothing() {
        // build.rs embeds a dist only when it has an index.html.
        assert_eq!(embedded(), !embedded::ASSETS.is_empty());
    }
}

//! The page shell every page shares: head, top bar with the signed-in user and the logout form,
//! and small helpers (timestamps, sizes, short digests, URL path encoding) the pages use.

use maud::{DOCTYPE, Markup, html};

/// Where the stylesheet and the script are served (the server routes these paths).
pub const CSS_PATH: &str = "/ui/static/clreg.css";
pub const JS_PATH: &str = "/ui/static/clreg.js";

/// The signed-in user's name and the session's form token (every form carries it).
pub struct Chrome<'a> {
    pub user: &'a str,
    pub csrf: &'a str,
}

/// A whole HTML document. `head` adds elements to `<head>` (the job page's refresh fallback).
pub fn page(
    title: &str,
    chrome: Option<&Chrome<'_>>,
    head: Option<Markup>,
    body: Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · clreg" }
                // No icon: browsers would otherwise ask for /favicon.ico.
                link rel="icon" href="data:,";
                link rel="stylesheet" href=(CSS_PATH);
                script src=(JS_PATH) defer {}
                @if let Some(head) = head { (head) }
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    nav aria-label="Main" {
                        a.brand href="/ui/" { "clreg" }
                        @if chrome.is_some() { a href="/ui/" { "Collaborations" } }
                    }
                    @if let Some(c) = chrome {
                        div.user {
                            span { "Signed in as " strong { (c.user) } }
                            form method="post" action="/ui/logout" {
                                (csrf_field(c.csrf))
                                button type="submit" { "Log out" }
                            }
                        }
                    }
                }
                main #main { (body) }
                footer {
                    "clreg registry · data as the server holds it now; "
                    "verify the ledger independently with " code { "clreg audit verify" } "."
                }
            }
        }
    }
}

/// The hidden field every form carries.
pub fn csrf_field(token: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(token); }
}

/// `2026-11-30 17:49 UTC`, in a `<time>` element with the exact instant.
pub fn time(at: &chrono::DateTime<chrono::Utc>) -> Markup {
    html! { time datetime=(at.to_rfc3339()) { (at.format("%Y-%m-%d %H:%M UTC")) } }
}

/// Bytes in binary units with three significant figures (`1.23 MiB`).
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else if value < 10.0 {
        format!("{value:.2} {}", UNITS[unit])
    } else if value < 100.0 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.0} {}", UNITS[unit])
    }
}

/// The first 12 hex digits of a digest or hash, with the whole value as a tooltip.
pub fn short_hash(hex: &str) -> Markup {
    let hex = hex.strip_prefix("sha256:").unwrap_or(hex);
    html! { code.hash title=(hex) { (hex.get(..12).unwrap_or(hex)) } }
}

/// Percent-encodes one URL path segment (everything but RFC 3986's unreserved characters).
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-encodes a relative file path, keeping its `/` separators.
pub fn path(p: &str) -> String {
    p.split('/').map(segment).collect::<Vec<_>>().join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_paths() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1024), "1.00 KiB");
        assert_eq!(size(538 * 1024 * 1024), "538 MiB");
        assert_eq!(size(15 * 1024 * 1024 + 512 * 1024), "15.5 MiB");
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
        assert_eq!(
            path("sub dir/model.safetensors"),
            "sub%20dir/model.safetensors"
        );
    }

    #[test]
    fn the_shell_escapes_and_carries_the_form_token() {
        let chrome = Chrome {
            user: "<b>eve</b>",
            csrf: "t0k",
        };
        let html = page("a <title>", Some(&chrome), None, html! { p { "x" } }).into_string();
        assert!(html.contains("a &lt;title&gt; · clreg"));
        assert!(html.contains("&lt;b&gt;eve&lt;/b&gt;"));
        assert!(html.contains(r#"name="csrf" value="t0k""#));
    }
}

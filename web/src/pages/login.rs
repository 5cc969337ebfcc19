//! The login form and the error page.

use maud::{Markup, html};

use crate::layout::{csrf_field, page};

/// The login form: an API key (as `clreg login` takes) becomes a browser session. `problem` is
/// the last attempt's refusal; `next` the page to return to.
pub fn login(csrf: &str, next: &str, problem: Option<&str>) -> Markup {
    let body = html! {
        h1 { "Log in" }
        p { "Use an API key (a server admin creates one with " code { "clreg-server admin create-key" } ")." }
        @if let Some(problem) = problem { p.problem role="alert" { (problem) } }
        form.login method="post" action="/ui/login" {
            (csrf_field(csrf))
            input type="hidden" name="next" value=(next);
            label for="api_key" { "API key" }
            input #api_key type="password" name="api_key" autocomplete="current-password" required autofocus;
            button type="submit" { "Log in" }
        }
    };
    page("Log in", None, None, body)
}

/// A refusal or failure as a page: the same status and stable code the API answers.
pub fn error(status: u16, code: &str, message: &str, signed_in: bool) -> Markup {
    let body = html! {
        h1 { "Refused: " (status) }
        p { "Code " code.code { (code) } }
        p.problem role="alert" { (message) }
        @if signed_in { p { a href="/ui/" { "Back to your collaborations" } } }
        @else { p { a href="/ui/login" { "Log in" } } }
    };
    page(&format!("{status} {code}"), None, None, body)
}

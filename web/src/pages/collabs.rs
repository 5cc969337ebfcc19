//! The collaborations the signed-in user belongs to.

use clreg_types::Collaboration;
use maud::{Markup, html};

use crate::layout::{Chrome, page, time};

pub fn collabs(chrome: &Chrome<'_>, collabs: &[Collaboration]) -> Markup {
    let body = html! {
        h1 { "Collaborations" }
        @if collabs.is_empty() {
            p.empty { "You are not a member of any collaboration yet. Create one with "
                code { "clreg collab create NAME --policy semi" } " or ask an owner to add you." }
        } @else {
            table {
                thead { tr { th { "Name" } th { "Policy" } th { "Your roles" } th { "Created" } th { "Description" } } }
                tbody {
                    @for c in collabs {
                        tr {
                            td { a href=(super::collab_href(&c.name)) { (c.name) } }
                            td { span class=(format!("badge policy-{}", c.policy.as_str())) { (c.policy.as_str()) } }
                            td { (c.my_roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")) }
                            td { (time(&c.created_at)) " by " (c.created_by) }
                            td { (c.description) }
                        }
                    }
                }
            }
        }
    };
    page("Collaborations", Some(chrome), None, body)
}

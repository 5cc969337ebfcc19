//! The ledger: its events, and what the server checked when the page was drawn (the hash chain,
//! the Merkle tree head, the checkpoint's signature). Auditors verify independently with
//! `clreg audit verify`.

use clreg_types::transparency::{LedgerKey, SignedCheckpoint};
use clreg_types::{Collaboration, LedgerEvent};
use maud::{Markup, html};

use super::collab_href;
use crate::layout::{Chrome, page, short_hash, time};

/// The outcome of each check (`Err` names what failed).
pub struct Verification {
    pub chain: Result<(), String>,
    pub tree_head: Result<(), String>,
    pub signature: Result<(), String>,
    pub checkpoint: SignedCheckpoint,
    pub key: LedgerKey,
    pub verified_at: chrono::DateTime<chrono::Utc>,
}

pub struct LedgerView<'a> {
    pub collab: &'a Collaboration,
    pub events: &'a [LedgerEvent],
    pub verification: &'a Verification,
}

fn check(name: &str, outcome: &Result<(), String>) -> Markup {
    html! {
        tr {
            th scope="row" { (name) }
            @match outcome {
                Ok(()) => td.ok { "✓ verified" },
                Err(why) => td.bad role="alert" { "✗ " (why) },
            }
        }
    }
}

pub fn ledger(chrome: &Chrome<'_>, v: &LedgerView<'_>) -> Markup {
    let c = v.collab;
    let ver = v.verification;
    let cp = &ver.checkpoint.checkpoint;
    let title = format!("Ledger of {}", c.name);
    let body = html! {
        p.crumbs { a href=(collab_href(&c.name)) { (c.name) } " / ledger" }
        h1 { (title) }
        section aria-labelledby="verification" {
            h2 #verification { "Verification" }
            table.checks {
                tbody {
                    (check("Hash chain (every event links to the one before)", &ver.chain))
                    (check("Merkle tree head (RFC 6962) equals the checkpoint's root", &ver.tree_head))
                    (check("Checkpoint signature (Ed25519)", &ver.signature))
                }
            }
            dl.facts {
                dt { "Tree size" } dd.num #tree-size { (cp.size) }
                dt { "Root hash" } dd { (short_hash(&cp.root)) }
                dt { "Checkpoint time" } dd { (time(&cp.timestamp)) }
                dt { "Key id" } dd { code { (cp.key_id) } }
                dt { "Public key" } dd { code.hash { (ver.key.public_key) } }
                dt { "Last verified" } dd { (time(&ver.verified_at)) " (when this page was drawn)" }
            }
            p.note { "These checks run on the server, against its own key. To check without trusting the server, pin its key and run "
                code { "clreg audit verify --collab " (c.name) } ": it also proves the history only grew since your last check." }
        }
        section aria-labelledby="events" {
            h2 #events { "Events (" (v.events.len()) ", newest first)" }
            @if v.events.is_empty() { p.empty { "No events." } }
            @else {
                table {
                    thead { tr { th { "#" } th { "Event" } th { "Actor" } th { "Time" } th { "Hash" } th { "Details" } } }
                    tbody {
                        @for e in v.events.iter().rev() {
                            tr {
                                td.num { (e.seq) }
                                td { (e.kind) }
                                td { (e.actor) }
                                td { (time(&e.created_at)) }
                                td { (short_hash(&e.hash)) }
                                td { details { summary { "payload" } pre { (serde_json::to_string_pretty(&e.payload).unwrap_or_default()) } } }
                            }
                        }
                    }
                }
            }
        }
    };
    page(&title, Some(chrome), None, body)
}

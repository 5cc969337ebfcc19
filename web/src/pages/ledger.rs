//! The ledger: its events, the hash-chain check the server ran when the page was drawn, and the
//! signed checkpoint an auditor verifies independently (`clreg audit verify` checks it against
//! a key they pinned and proves the history only grew since their last run; the server cannot
//! meaningfully check its own signature, so the page does not pretend to).

use clreg_types::transparency::{LedgerKey, SignedCheckpoint};
use clreg_types::{Collaboration, LedgerEvent};
use maud::{Markup, html};

use super::collab_href;
use crate::layout::{Chrome, page, short_hash, time};

/// The chain check (`Err` names the first bad event) and the checkpoint as signed now.
pub struct Verification {
    pub chain: Result<(), String>,
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
                    (check("Hash chain: every event's hash and its link to the one before", &ver.chain))
                }
            }
            p.meta { "Checked " (time(&ver.verified_at)) ", when this page was drawn. This catches events edited, removed, inserted or reordered in the database without their hashes being redone." }
            h3 { "Signed checkpoint" }
            p { "The Merkle tree (RFC 6962) over every event, signed now with the server's key. Pin the key and run "
                code { "clreg audit verify --collab " (c.name) }
                ": it checks the signature against your pinned key, recomputes the tree, and proves the history only grew since your last run — which catches even a history rewritten with fresh hashes." }
            dl.facts {
                dt { "Tree size" } dd.num #tree-size { (cp.size) }
                dt { "Root hash" } dd { (short_hash(&cp.root)) }
                dt { "Signed at" } dd { (time(&cp.timestamp)) }
                dt { "Key id" } dd { code { (cp.key_id) } }
                dt { "Public key (Ed25519)" } dd { code.hash { (ver.key.public_key) } }
                dt { "Signature" } dd { (short_hash(&ver.checkpoint.signature)) }
            }
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

//! `clreg ledger`: a collaboration's event chain.

use anyhow::Result;
use clreg_types::LedgerEvent;

use super::Ctx;
use crate::client::seg;
use crate::error::ExitStatus;
use crate::output::{short, short_time, table};

pub async fn ledger(ctx: &Ctx, collab: &str) -> Result<ExitStatus> {
    let events: Vec<LedgerEvent> = ctx
        .client()?
        .get(&format!("/collaborations/{}/ledger", seg(collab)))
        .await?;
    ctx.out.emit(&events, || {
        let rows: Vec<Vec<String>> = events
            .iter()
            .map(|e| {
                vec![
                    e.seq.to_string(),
                    short_time(&e.created_at),
                    e.actor.clone(),
                    e.kind.clone(),
                    short(&e.hash, 12).to_string(),
                ]
            })
            .collect();
        table(&["SEQ", "TIME", "ACTOR", "KIND", "HASH"], &rows)
    })?;
    Ok(ExitStatus::Success)
}

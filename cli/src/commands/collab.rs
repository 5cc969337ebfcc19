//! `clreg collab …`: create, list, show, members, tighten.

use std::io::{BufRead as _, IsTerminal as _};

use anyhow::Result;
use clreg_types::{
    AddMember, ChangePolicy, Collaboration, CreateCollaboration, Member, Policy, Role,
};
use serde_json::json;

use super::Ctx;
use crate::client::seg;
use crate::error::{ExitStatus, LocalError};
use crate::output::{short_time, table};

fn roles(r: &[Role]) -> String {
    if r.is_empty() {
        "-".into()
    } else {
        r.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(",")
    }
}

pub async fn create(
    ctx: &Ctx,
    name: String,
    policy: Policy,
    description: String,
) -> Result<ExitStatus> {
    clreg_types::check_name(&name).map_err(LocalError::usage)?;
    let client = ctx.client()?;
    let c: Collaboration = client
        .post(
            "/collaborations",
            &CreateCollaboration {
                name,
                policy,
                description,
            },
        )
        .await?;
    ctx.out.emit(&c, || {
        format!("created collaboration {} (policy {})", c.name, c.policy)
    })?;
    Ok(ExitStatus::Success)
}

pub async fn ls(ctx: &Ctx) -> Result<ExitStatus> {
    let list: Vec<Collaboration> = ctx.client()?.get("/collaborations").await?;
    ctx.out.emit(&list, || {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|c| {
                vec![
                    c.name.clone(),
                    c.policy.to_string(),
                    roles(&c.my_roles),
                    short_time(&c.created_at),
                    c.description.clone(),
                ]
            })
            .collect();
        table(
            &["NAME", "POLICY", "MY ROLES", "CREATED", "DESCRIPTION"],
            &rows,
        )
    })?;
    Ok(ExitStatus::Success)
}

pub async fn show(ctx: &Ctx, name: &str) -> Result<ExitStatus> {
    let client = ctx.client()?;
    let c: Collaboration = client
        .get(&format!("/collaborations/{}", seg(name)))
        .await?;
    let members: Vec<Member> = client
        .get(&format!("/collaborations/{}/members", seg(name)))
        .await?;
    ctx.out.emit(&json!({"collaboration": c, "members": members}), || {
        let mut s = format!(
            "name:        {}\npolicy:      {}\ndescription: {}\ncreated:     {} by {}\nmy roles:    {}\n\n",
            c.name,
            c.policy,
            c.description,
            short_time(&c.created_at),
            c.created_by,
            roles(&c.my_roles)
        );
        let rows: Vec<Vec<String>> = members.iter().map(|m| vec![m.user.clone(), roles(&m.roles)]).collect();
        s.push_str(&table(&["MEMBER", "ROLES"], &rows));
        s
    })?;
    Ok(ExitStatus::Success)
}

pub async fn add_member(ctx: &Ctx, name: &str, user: String, role: Role) -> Result<ExitStatus> {
    let client = ctx.client()?;
    let m: Member = client
        .post(
            &format!("/collaborations/{}/members", seg(name)),
            &AddMember { user, role },
        )
        .await?;
    ctx.out
        .emit(&m, || format!("{} in {name}: {}", m.user, roles(&m.roles)))?;
    Ok(ExitStatus::Success)
}

pub async fn remove_member(
    ctx: &Ctx,
    name: &str,
    user: &str,
    role: Option<Role>,
) -> Result<ExitStatus> {
    let client = ctx.client()?;
    let mut path = format!("/collaborations/{}/members/{}", seg(name), seg(user));
    if let Some(r) = role {
        path.push_str(&format!("?role={r}"));
    }
    client.delete(&path).await?;
    ctx.out.emit(
        &json!({"collab": name, "user": user, "role": role, "removed": true}),
        || match role {
            Some(r) => format!("removed role {r} of {user} in {name}"),
            None => format!("removed {user} from {name}"),
        },
    )?;
    Ok(ExitStatus::Success)
}

pub async fn tighten(ctx: &Ctx, name: &str, yes: bool) -> Result<ExitStatus> {
    if !yes && !confirm(name)? {
        return Err(LocalError::usage(format!(
            "tightening `{name}` to semi purges its stored dataset content and cannot be undone; \
             re-run with --yes"
        ))
        .into());
    }
    let client = ctx.client()?;
    let c: Collaboration = client
        .post(
            &format!("/collaborations/{}/policy", seg(name)),
            &ChangePolicy {
                policy: Policy::Semi,
            },
        )
        .await?;
    ctx.out
        .emit(&c, || format!("{} now has policy {}", c.name, c.policy))?;
    Ok(ExitStatus::Success)
}

/// Asks on the terminal; never when stdin or stderr is not one.
fn confirm(name: &str) -> Result<bool> {
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Ok(false);
    }
    eprint!("Tighten `{name}` from full to semi? Stored dataset content is purged. [y/N] ");
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

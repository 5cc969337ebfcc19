//! One function per page; each takes the wire types the API returns, so a page shows exactly
//! what the API reports.

mod artifact;
mod collab;
mod collabs;
mod job;
mod ledger;
mod lineage;
mod login;
mod series;

pub use artifact::{ArtifactView, artifact};
pub use collab::{CollabView, collab};
pub use collabs::collabs;
pub use job::{job, job_row};
pub use ledger::{LedgerView, Verification, ledger};
pub use lineage::{graph, lineage_page};
pub use login::{error, login};
pub use series::series;

use clreg_types::{ArtifactKind, Policy, Role};

/// What a policy means, in one sentence each (shown on the collaboration page).
pub fn policy_meaning(policy: Policy) -> &'static str {
    match policy {
        Policy::Semi => {
            "Semi-cooperative: models are shared; datasets are not. The registry keeps only each \
             dataset's manifest (digest, size, task, metric, licence); content travels with the \
             one job it was sent for and is deleted when that job ends. Replay and joint \
             training are refused."
        }
        Policy::Full => {
            "Fully-cooperative: datasets are stored and readable by members, and may feed replay \
             and joint training."
        }
    }
}

/// What a role may do.
pub fn role_meaning(role: Role) -> &'static str {
    match role {
        Role::Owner => "manages members and policy, pushes base models",
        Role::Contributor => "pushes checkpoints and adapters, registers datasets, trains",
        Role::Consumer => "downloads models, requests merges, mixes and evaluations",
        Role::Auditor => "reads lineage, evaluations and the ledger; no bytes",
    }
}

/// The link to an artifact's page.
pub fn artifact_href(id: &str) -> String {
    format!("/ui/artifacts/{}", crate::layout::segment(id))
}

/// The link to a collaboration's page.
pub fn collab_href(name: &str) -> String {
    format!("/ui/c/{}", crate::layout::segment(name))
}

fn kind_badge(kind: ArtifactKind) -> maud::Markup {
    maud::html! { span class=(format!("badge kind-{}", kind.as_str())) { (kind.as_str()) } }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! Rendering with real wire values: empty states, a series with one round, escaping.
    use chrono::Utc;
    use clreg_types::{
        Collaboration, HistoryPoint, Lineage, ScoreRow, Series, SeriesReport, SeriesRound,
    };

    use super::*;
    use crate::layout::Chrome;

    const CHROME: Chrome<'static> = Chrome {
        user: "alice",
        csrf: "tok",
    };

    fn lab() -> Collaboration {
        Collaboration {
            name: "lab".into(),
            policy: Policy::Semi,
            description: "<script>alert(1)</script>".into(),
            created_by: "alice".into(),
            created_at: Utc::now(),
            my_roles: vec![Role::Owner],
        }
    }

    #[test]
    fn an_empty_collaboration_says_so_in_each_section() {
        let c = lab();
        let html = collab(
            &CHROME,
            &CollabView {
                collab: &c,
                members: &[],
                artifacts: &[],
                datasets: &[],
                jobs: &[],
                series: &[],
            },
        )
        .into_string();
        assert!(html.contains("No artifacts yet"));
        assert!(html.contains("No datasets registered"));
        assert!(html.contains("No jobs yet"));
        assert!(html.contains("No series yet"));
        assert!(html.contains("Semi-cooperative"));
        assert!(html.contains("&lt;script&gt;") && !html.contains("<script>alert"));
        let none = collabs(&CHROME, &[]).into_string();
        assert!(none.contains("not a member of any collaboration"));
        let graph = lineage_page(
            &CHROME,
            &c,
            &Lineage {
                root: "lab".into(),
                nodes: vec![],
                edges: vec![],
            },
        )
        .into_string();
        assert!(graph.contains("0 artifacts") && graph.contains("<title"));
    }

    #[test]
    fn a_series_with_one_round_shows_its_scores_and_why_there_are_no_figures() {
        let c = lab();
        let s = Series {
            collab: "lab".into(),
            name: "seq".into(),
            base: "b".into(),
            tasks: vec!["fomc".into(), "cstance".into()],
            round_of_task: None,
            description: String::new(),
            rounds: vec![SeriesRound {
                round: 1,
                artifact: "r1".into(),
                added_by: "alice".into(),
                added_at: Utc::now(),
            }],
            created_by: "alice".into(),
            created_at: Utc::now(),
        };
        let r = SeriesReport {
            collab: "lab".into(),
            series: "seq".into(),
            rounds: 1,
            tasks: s.tasks.clone(),
            base: ScoreRow {
                round: 0,
                artifact: "b".into(),
                scores: vec![Some(0.25), None],
            },
            matrix: vec![ScoreRow {
                round: 1,
                artifact: "r1".into(),
                scores: vec![Some(0.8125), Some(0.5)],
            }],
            missing: vec!["base (lab/b:1): cstance".into()],
            transfer_tasks: vec!["fomc".into()],
            transfer: None,
            pending: Some("transfer needs two rounds".into()),
            history: vec![HistoryPoint {
                round: 1,
                bwt: None,
                fwt: None,
                final_average: Some(0.8125),
                average_gain: None,
                taken_at: Utc::now(),
            }],
        };
        let names = std::collections::HashMap::from([("r1".to_string(), "round1 v1".to_string())]);
        let html = series(&CHROME, &c, &s, &r, &names).into_string();
        assert!(html.contains(">round1 v1</a>"));
        for shown in ["0.2500", "0.8125", "0.5000"] {
            assert!(html.contains(&format!(">{shown}<")), "{shown}");
        }
        assert!(html.contains("transfer needs two rounds"));
        assert!(html.contains("Missing: base (lab/b:1): cstance"));
        assert_eq!(html.matches("<svg").count(), html.matches("<desc").count());
    }
}

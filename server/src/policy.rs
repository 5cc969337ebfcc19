//! The one place that decides whether a use of dataset content is allowed under a
//! collaboration's policy (DESIGN.md, "What each policy allows"). Roles are the authorization
//! table's business ([`crate::authz::Action`]); [`decide`] asks both, in that order.
//!
//! `semi`: only manifests are kept; a job may use dataset content only when it carries that
//! content in its own request, for a dataset the submitter registered, and the content is
//! deleted when the job ends. `full`: content is stored and may feed replay, joint training and
//! router training by digest.
//!
//! Jobs are checked when they are submitted and again when a worker claims them, since the
//! policy may have been tightened in between.

use clreg_types::{ErrorCode, Policy, Role};

use crate::authz::Action;
use crate::error::ApiError;

/// A use of dataset content (or of a manifest) that a policy allows or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataUse {
    /// Register a manifest: digest, size, task, metric, licence.
    RegisterManifest,
    /// Store a dataset's content in the registry.
    StoreContent,
    /// Download stored content.
    ReadContent,
    /// Train on content carried in the job's own request (a dataset the submitter registered).
    TrainOnCarried,
    /// Evaluate on content carried in the job's own request.
    EvalOnCarried,
    /// Train on stored datasets, by digest.
    TrainOnStored,
    /// Evaluate on stored datasets, by digest.
    EvalOnStored,
    /// Replay or joint training over earlier tasks' data (other members' datasets).
    ReplayOrJoint,
    /// Router prompts sent in a mix request.
    RouterPrompts,
    /// Router training on a stored dataset.
    RouterTrainingOnStored,
}

impl DataUse {
    pub const ALL: [DataUse; 10] = [
        DataUse::RegisterManifest,
        DataUse::StoreContent,
        DataUse::ReadContent,
        DataUse::TrainOnCarried,
        DataUse::EvalOnCarried,
        DataUse::TrainOnStored,
        DataUse::EvalOnStored,
        DataUse::ReplayOrJoint,
        DataUse::RouterPrompts,
        DataUse::RouterTrainingOnStored,
    ];

    /// The member action (so the roles) this use needs.
    pub fn action(self) -> Action {
        match self {
            DataUse::RegisterManifest | DataUse::StoreContent | DataUse::ReadContent => {
                Action::Datasets
            }
            DataUse::TrainOnCarried | DataUse::TrainOnStored | DataUse::ReplayOrJoint => {
                Action::SubmitTrain
            }
            DataUse::EvalOnCarried
            | DataUse::EvalOnStored
            | DataUse::RouterPrompts
            | DataUse::RouterTrainingOnStored => Action::SubmitJob,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            DataUse::RegisterManifest => "registering a dataset manifest",
            DataUse::StoreContent => "storing dataset content",
            DataUse::ReadContent => "reading dataset content",
            DataUse::TrainOnCarried => "training on data carried in the job",
            DataUse::EvalOnCarried => "evaluating on data carried in the job",
            DataUse::TrainOnStored => "training on stored datasets",
            DataUse::EvalOnStored => "evaluating on stored datasets",
            DataUse::ReplayOrJoint => "replay or joint training over earlier tasks' data",
            DataUse::RouterPrompts => "router prompts sent with the mix",
            DataUse::RouterTrainingOnStored => "router training on a stored dataset",
        }
    }
}

/// Whether `policy` allows `data_use`; the refusal names the rule and what to do instead.
pub fn check(collab: &str, policy: Policy, data_use: DataUse) -> Result<(), ApiError> {
    let allowed = match policy {
        Policy::Full => true,
        Policy::Semi => matches!(
            data_use,
            DataUse::RegisterManifest
                | DataUse::TrainOnCarried
                | DataUse::EvalOnCarried
                | DataUse::RouterPrompts
        ),
    };
    if allowed {
        return Ok(());
    }
    let instead = match data_use {
        DataUse::StoreContent => {
            "register the manifest only (store_content: false, `clreg dataset push --manifest-only`)"
        }
        DataUse::ReadContent => "dataset content is never kept or served there",
        DataUse::TrainOnStored | DataUse::EvalOnStored | DataUse::RouterTrainingOnStored => {
            "send the content with the job (a dataset you registered); it is deleted when the job ends"
        }
        DataUse::ReplayOrJoint => {
            "train on the current task's data only, or run replay and joint training in a fully-cooperative collaboration"
        }
        DataUse::RegisterManifest
        | DataUse::TrainOnCarried
        | DataUse::EvalOnCarried
        | DataUse::RouterPrompts => "",
    };
    Err(ApiError::new(
        ErrorCode::PolicyForbids,
        format!(
            "`{collab}` is semi-cooperative: models are shared, datasets are not, so {} is not allowed; {instead}",
            data_use.describe()
        ),
    ))
}

/// Roles first (the authorization table), then the policy.
pub fn decide(
    collab: &str,
    policy: Policy,
    roles: &[Role],
    data_use: DataUse,
) -> Result<(), ApiError> {
    let action = data_use.action();
    if !roles.iter().any(|r| action.roles().contains(r)) {
        let allowed: Vec<&str> = action.roles().iter().map(|r| r.as_str()).collect();
        return Err(ApiError::forbidden(format!(
            "{} needs the role {} in collaboration `{collab}`; ask an owner to grant it",
            data_use.describe(),
            allowed.join(" or ")
        )));
    }
    check(collab, policy, data_use)
}

/// Whether bytes may become an artifact file: not when they are the content of a dataset
/// registered in a `semi` collaboration (`semi_holders`, by name), whose data never outlives
/// the job it was sent for — published as a model file, anyone who may download it would
/// have it.
pub fn publishable(path: &str, semi_holders: &[String]) -> Result<(), ApiError> {
    match semi_holders.first() {
        None => Ok(()),
        Some(collab) => Err(ApiError::new(
            ErrorCode::PolicyForbids,
            format!(
                "file `{path}` is the content of a dataset registered in semi-cooperative `{collab}`; \
                 dataset content may not be published as an artifact"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DESIGN.md's two tables, cell by cell: which roles may, and which policies allow.
    #[test]
    fn every_policy_use_and_role() {
        use DataUse::*;
        use Role::*;
        let semi_allows = [
            RegisterManifest,
            TrainOnCarried,
            EvalOnCarried,
            RouterPrompts,
        ];
        let roles_for = |u: DataUse| -> &'static [Role] {
            match u {
                RegisterManifest | StoreContent | ReadContent => &[Owner, Contributor],
                TrainOnCarried | TrainOnStored | ReplayOrJoint => &[Owner, Contributor],
                EvalOnCarried | EvalOnStored | RouterPrompts | RouterTrainingOnStored => {
                    &[Owner, Contributor, Consumer]
                }
            }
        };
        let mut cells = 0;
        for policy in [Policy::Semi, Policy::Full] {
            for data_use in DataUse::ALL {
                for role in [Owner, Contributor, Consumer, Auditor] {
                    let got = decide("c", policy, &[role], data_use);
                    let role_ok = roles_for(data_use).contains(&role);
                    let policy_ok = policy == Policy::Full || semi_allows.contains(&data_use);
                    match (role_ok, policy_ok) {
                        (true, true) => assert!(got.is_ok(), "{policy:?} {data_use:?} {role:?}"),
                        (false, _) => {
                            let e = got.expect_err("role refused");
                            assert_eq!(e.code, ErrorCode::Forbidden, "{data_use:?} {role:?}");
                            assert!(e.message.contains("ask an owner"), "{}", e.message);
                        }
                        (true, false) => {
                            let e = got.expect_err("policy refused");
                            assert_eq!(e.code, ErrorCode::PolicyForbids, "{data_use:?}");
                            assert!(e.message.contains("semi-cooperative"), "{}", e.message);
                            assert!(e.message.len() > 80, "says what to do: {}", e.message);
                        }
                    }
                    cells += 1;
                }
            }
        }
        assert_eq!(cells, 2 * DataUse::ALL.len() * 4);
    }
}

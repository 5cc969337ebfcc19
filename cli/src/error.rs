//! The CLI's error kinds and the stable exit codes `main` maps them to.

use std::fmt;

/// The process exit codes, documented in `clreg --help`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Success = 0,
    Failure = 1,
    Usage = 2,
    Auth = 3,
    NotFound = 4,
    Refused = 5,
    Server = 6,
    Verify = 7,
    /// Stopped by Ctrl-C (128 + SIGINT, as shells report it).
    Cancelled = 130,
}

impl From<ExitStatus> for std::process::ExitCode {
    fn from(s: ExitStatus) -> Self {
        std::process::ExitCode::from(s as u8)
    }
}

/// A refusal from the server: its HTTP status and `{code, message}` body.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn exit_status(&self) -> ExitStatus {
        match self.status {
            401 => ExitStatus::Auth,
            404 => ExitStatus::NotFound,
            400..=499 => ExitStatus::Refused,
            _ => ExitStatus::Server,
        }
    }

    pub fn is(&self, code: clreg_types::ErrorCode) -> bool {
        self.code == code.as_str()
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiError {}

/// A failure found on this side, with a stable code and exit status.
#[derive(Debug, Clone)]
pub struct LocalError {
    pub status: ExitStatus,
    pub code: &'static str,
    pub message: String,
}

impl LocalError {
    /// No usable login for the server (exit 3).
    pub fn not_logged_in(message: impl Into<String>) -> Self {
        Self {
            status: ExitStatus::Auth,
            code: "not_logged_in",
            message: message.into(),
        }
    }

    /// Local files failed verification: a digest mismatch, an invalid file (exit 7).
    pub fn verify(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: ExitStatus::Verify,
            code,
            message: message.into(),
        }
    }

    /// The command line asks for something impossible (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            status: ExitStatus::Usage,
            code: "usage",
            message: message.into(),
        }
    }

    /// A limit or rule of the server refuses this before it is sent (exit 5).
    pub fn refused(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: ExitStatus::Refused,
            code,
            message: message.into(),
        }
    }

    /// A failure of local engine work, with the exit status its kind calls for: invalid input
    /// files 7, impossible settings 2, cancelled 130, I/O or computation 1.
    pub fn engine(code: clreg_engine::Code, message: impl Into<String>) -> Self {
        use clreg_engine::Kind;
        Self {
            status: match code.kind() {
                Kind::Input => ExitStatus::Verify,
                Kind::Settings => ExitStatus::Usage,
                Kind::Cancelled => ExitStatus::Cancelled,
                Kind::Io | Kind::Compute => ExitStatus::Failure,
            },
            code: code.as_str(),
            message: message.into(),
        }
    }

    /// The server answered something the contract does not allow (exit 6).
    pub fn protocol(message: impl Into<String>) -> Self {
        Self {
            status: ExitStatus::Server,
            code: "protocol",
            message: message.into(),
        }
    }
}

impl fmt::Display for LocalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for LocalError {}

/// How `main` reports one error: the code shown in `error[<code>]`, and the exit status.
pub struct Classified {
    pub code: Option<String>,
    pub status: ExitStatus,
    pub broken_pipe: bool,
}

/// Finds the most specific cause in the chain: our typed errors first, then network errors.
pub fn classify(err: &anyhow::Error) -> Classified {
    let mut out = Classified {
        code: None,
        status: ExitStatus::Failure,
        broken_pipe: false,
    };
    for cause in err.chain() {
        if let Some(api) = cause.downcast_ref::<ApiError>() {
            out.code = Some(api.code.clone());
            out.status = api.exit_status();
            return out;
        }
        if let Some(local) = cause.downcast_ref::<LocalError>() {
            out.code = Some(local.code.to_string());
            out.status = local.status;
            return out;
        }
        if cause.downcast_ref::<reqwest::Error>().is_some() {
            out.code = Some("network".to_string());
            out.status = ExitStatus::Server;
            return out;
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::BrokenPipe
        {
            out.broken_pipe = true;
            out.status = ExitStatus::Success;
            return out;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    fn api(status: u16, code: &str) -> anyhow::Error {
        anyhow::Error::new(ApiError {
            status,
            code: code.into(),
            message: "m".into(),
        })
    }

    #[test]
    fn statuses_map_to_exit_codes() {
        assert_eq!(
            classify(&api(401, "invalid_token")).status,
            ExitStatus::Auth
        );
        assert_eq!(
            classify(&api(404, "not_found")).status,
            ExitStatus::NotFound
        );
        assert_eq!(classify(&api(403, "forbidden")).status, ExitStatus::Refused);
        assert_eq!(classify(&api(409, "conflict")).status, ExitStatus::Refused);
        assert_eq!(
            classify(&api(422, "invalid_model")).status,
            ExitStatus::Refused
        );
        assert_eq!(classify(&api(500, "internal")).status, ExitStatus::Server);
        let wrapped = Err::<(), _>(api(404, "blob_unknown"))
            .context("committing")
            .err();
        let c = wrapped.as_ref().map(classify);
        assert_eq!(
            c.as_ref().and_then(|c| c.code.clone()).as_deref(),
            Some("blob_unknown")
        );
        let local = anyhow::Error::new(LocalError::verify("digest_mismatch", "x"));
        assert_eq!(classify(&local).status, ExitStatus::Verify);
        let pipe = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert!(classify(&pipe).broken_pipe);
        assert_eq!(
            classify(&anyhow::anyhow!("other")).status,
            ExitStatus::Failure
        );
    }
}

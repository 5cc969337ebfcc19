//! Artifact references on the command line: `collab/name[:version|:latest]` or an id (prefix).

use std::fmt;
use std::str::FromStr;

use crate::client::seg;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Version {
    Latest,
    Number(i64),
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Version::Latest => f.write_str("latest"),
            Version::Number(n) => write!(f, "{n}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArtifactRef {
    Named {
        collab: String,
        name: String,
        version: Version,
    },
    /// A full id or a unique prefix of at least 8 hex digits, lower case.
    Id(String),
}

impl ArtifactRef {
    /// The API path that answers this reference with an `Artifact`.
    pub fn api_path(&self) -> String {
        match self {
            ArtifactRef::Named {
                collab,
                name,
                version,
            } => {
                format!(
                    "/collaborations/{}/artifacts/{}/{version}",
                    seg(collab),
                    seg(name)
                )
            }
            ArtifactRef::Id(id) => format!("/artifacts/{id}"),
        }
    }
}

impl fmt::Display for ArtifactRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArtifactRef::Named {
                collab,
                name,
                version,
            } => write!(f, "{collab}/{name}:{version}"),
            ArtifactRef::Id(id) => f.write_str(id),
        }
    }
}

impl FromStr for ArtifactRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            Err(format!(
                "invalid artifact reference `{}`: {why}; use collab/name, collab/name:VERSION, \
                 collab/name:latest, or an id (at least 8 hex digits)",
                s.escape_debug()
            ))
        };
        if let Some((collab, rest)) = s.split_once('/') {
            let (name, version) = match rest.split_once(':') {
                Some((name, v)) => (name, v),
                None => (rest, "latest"),
            };
            if clreg_types::check_name(collab).is_err() {
                return bad("the collaboration name is not valid");
            }
            if clreg_types::check_name(name).is_err() {
                return bad("the artifact name is not valid");
            }
            let version = match version {
                "latest" => Version::Latest,
                v => match v.parse::<i64>() {
                    Ok(n) if n >= 1 && v.bytes().all(|b| b.is_ascii_digit()) => Version::Number(n),
                    _ => return bad("the version must be a positive number or `latest`"),
                },
            };
            return Ok(ArtifactRef::Named {
                collab: collab.to_string(),
                name: name.to_string(),
                version,
            });
        }
        let hex = s.strip_prefix("sha256:").unwrap_or(s);
        if hex.len() < 8 || hex.len() > 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return bad("an id is 8 to 64 hex digits");
        }
        Ok(ArtifactRef::Id(hex.to_ascii_lowercase()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(c: &str, n: &str, v: Version) -> ArtifactRef {
        ArtifactRef::Named {
            collab: c.into(),
            name: n.into(),
            version: v,
        }
    }

    #[test]
    fn parses_every_form() {
        assert_eq!(
            "org/llama:3".parse(),
            Ok(named("org", "llama", Version::Number(3)))
        );
        assert_eq!(
            "org/llama".parse(),
            Ok(named("org", "llama", Version::Latest))
        );
        assert_eq!(
            "org/llama:latest".parse(),
            Ok(named("org", "llama", Version::Latest))
        );
        assert_eq!("DEADBEEF".parse(), Ok(ArtifactRef::Id("deadbeef".into())));
        let full = "a".repeat(64);
        assert_eq!(format!("sha256:{full}").parse(), Ok(ArtifactRef::Id(full)));
        for bad in [
            "",
            "abc",
            "deadbee",
            "org/",
            "/x",
            "org/x:0",
            "org/x:-1",
            "org/x:v1",
            "org/x:+1",
            "org/a/b",
            "org/.x",
            "zzzzzzzz",
            &"a".repeat(65),
        ] {
            assert!(bad.parse::<ArtifactRef>().is_err(), "{bad}");
        }
    }

    #[test]
    fn api_paths() {
        assert_eq!(
            named("org", "m", Version::Number(2)).api_path(),
            "/collaborations/org/artifacts/m/2"
        );
        assert_eq!(
            named("org", "m", Version::Latest).to_string(),
            "org/m:latest"
        );
        assert_eq!(
            ArtifactRef::Id("deadbeef".into()).api_path(),
            "/artifacts/deadbeef"
        );
    }
}

//! Guesses an artifact's kind from its file list when `--kind` is not given.

use clreg_types::ArtifactKind;

/// `adapter_config.json` → adapter; `config.json` → base, or checkpoint when a base is named.
pub fn detect_kind(paths: &[String], has_base: bool) -> Option<ArtifactKind> {
    let has = |name: &str| paths.iter().any(|p| p == name);
    if has("adapter_config.json") {
        Some(ArtifactKind::Adapter)
    } else if has("config.json") {
        Some(if has_base { ArtifactKind::Checkpoint } else { ArtifactKind::Base })
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let adapter = p(&["adapter_config.json", "adapter_model.safetensors"]);
        assert_eq!(detect_kind(&adapter, true), Some(ArtifactKind::Adapter));
        let model = p(&["config.json", "model.safetensors"]);
        assert_eq!(detect_kind(&model, false), Some(ArtifactKind::Base));
        assert_eq!(detect_kind(&model, true), Some(ArtifactKind::Checkpoint));
        assert_eq!(detect_kind(&p(&["weights.bin"]), false), None);
    }
}

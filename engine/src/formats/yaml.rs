//! Bounds on YAML recipes before they reach the parser. libyaml (under serde_yaml) spends time
//! quadratic in the nesting depth of flow collections: 20,000 nested `[` (40 KB) took seconds,
//! a megabyte of them would take hours. A recipe is a few hundred bytes of shallow YAML, so text
//! over [`MAX_RECIPE_LEN`] bytes or nested deeper than [`MAX_FLOW_DEPTH`] is refused up front.

/// The longest recipe accepted (real ones are well under a kilobyte per model).
pub const MAX_RECIPE_LEN: usize = 256 << 10;
/// The deepest nesting of `[` / `{` accepted outside quoted strings.
pub const MAX_FLOW_DEPTH: usize = 64;

/// `Err` says why `text` is refused.
pub fn check_recipe_text(text: &str) -> Result<(), String> {
    if text.len() > MAX_RECIPE_LEN {
        return Err(format!(
            "the recipe is {} bytes, over the {MAX_RECIPE_LEN}-byte limit",
            text.len()
        ));
    }
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut comment = false;
    for c in text.chars() {
        if comment {
            comment = c != '\n';
            continue;
        }
        match quote {
            Some('"') if escaped => escaped = false,
            Some('"') if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '"' | '\'' => quote = Some(c),
                '#' => comment = true,
                '[' | '{' => {
                    depth += 1;
                    deepest = deepest.max(depth);
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
    }
    if deepest > MAX_FLOW_DEPTH {
        return Err(format!(
            "the recipe nests `[`/`{{` {deepest} deep; at most {MAX_FLOW_DEPTH} is accepted"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_or_long_text_is_refused_and_real_recipes_pass() {
        let deep = format!("models: {}{}", "[".repeat(65), "]".repeat(65));
        assert!(check_recipe_text(&deep).is_err());
        let ok = format!("models: {}{}", "[".repeat(64), "]".repeat(64));
        assert!(check_recipe_text(&ok).is_ok());
        // Brackets inside quotes and comments do not count.
        let quoted = format!(
            "a: \"{}\"\nb: '{}' # {}",
            "[".repeat(100),
            "{".repeat(100),
            "[".repeat(100)
        );
        assert!(check_recipe_text(&quoted).is_ok());
        assert!(check_recipe_text(&"a".repeat(MAX_RECIPE_LEN + 1)).is_err());
        let real = "merge_method: ties\nbase_model: lab/base\nmodels:\n  - model: lab/a\n    parameters: {weight: [0.5, 0.5], density: 0.2}\n";
        assert!(check_recipe_text(real).is_ok());
    }
}

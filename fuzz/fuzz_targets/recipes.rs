//! mergekit and mergekit-moe YAML recipes: parsed and resolved as a job submission checks them.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(recipe) = clreg_engine::merge::Recipe::from_yaml(text) {
        let _ = recipe.resolve();
    }
    // `prompts_file` reads a local file (the server refuses it before resolving): not fuzzed.
    if let Ok(recipe) = clreg_engine::moe::MoeRecipe::from_yaml(text)
        && recipe.experts.iter().all(|e| e.prompts_file.is_none())
    {
        let _ = recipe.resolve();
    }
});

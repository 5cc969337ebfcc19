//! PEFT `adapter_config.json` parsing, and the per-module rank and scale it answers.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(cfg) = clreg_engine::adapter::parse(data, "adapter_config.json") {
        for module in ["model.layers.0.self_attn.q_proj", "lm_head", ""] {
            let _ = cfg.target_modules.matches(module);
            let _ = (
                cfg.rank_for(module),
                cfg.alpha_for(module),
                cfg.scale_for(module),
            );
        }
    }
});

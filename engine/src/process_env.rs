//! The process environment engine work (training above all) wants, which glibc and candle read
//! only at start-up: a process that runs engine work sets these on itself by re-running
//! (`clreg local …`, see `cli/src/tuning.rs`) or on the child it starts (the server's job
//! runner). Rust 2024 makes `set_var` unsafe and the workspace forbids `unsafe`, so neither can
//! set them on a running process. A value the user already set is kept.
//!
//! - `GLIBC_TUNABLES=glibc.malloc.mmap_threshold=…:glibc.malloc.trim_threshold=…`: glibc would
//!   hand every large buffer back to the kernel when it is freed, and the kernel zeroes fresh
//!   pages on the next step: ~20 % of a LoRA step on SmolLM2-135M went to page faults.
//!   `…:glibc.malloc.arena_max=1`: training shards ([`crate::train`]) run on threads of their
//!   own, and a thread's own arena ignores those thresholds (it maps anything over 64 MiB afresh
//!   and unmaps heaps that empty), so a full fine-tuning step spent ~14 % of its time zeroing
//!   pages; one shared arena made that step 3.1–3.4 s instead of 3.7–4.2 s on 2 cores, and LoRA
//!   steps and mixes no slower.
//! - `CANDLE_NUM_THREADS=1`: candle's element-wise thread pool spin-waits and competes with the
//!   matrix multiplies' threads (`RAYON_NUM_THREADS`); a LoRA step took 2.2 s instead of 2.7 s.

/// `(variable, value)` pairs for a process that runs engine work.
pub const ENGINE_ENV: [(&str, &str); 2] = [
    (
        "GLIBC_TUNABLES",
        "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=4294967296:\
         glibc.malloc.arena_max=1",
    ),
    ("CANDLE_NUM_THREADS", "1"),
];

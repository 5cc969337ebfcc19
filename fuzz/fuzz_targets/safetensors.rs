//! The safetensors header check and the upload's streaming NaN scan, on one input: neither
//! panics, and when the header check accepts the file the scan agrees with a whole-tensor
//! finiteness check, whatever the chunking.
#![no_main]

use clreg_engine::finite_scan::{FiniteScan, Outcome};
use clreg_engine::safetensors_header::{check_finite, inspect_bytes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, bytes)) = data.split_first() else {
        return;
    };
    let mut scan = FiniteScan::new();
    for piece in bytes.chunks(usize::from(chunk).max(1)) {
        scan.update(piece);
    }
    let Ok(info) = inspect_bytes(bytes, "fuzz.safetensors") else {
        return;
    };
    let start = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap_or_default()) as usize;
    let finite = info.tensors.iter().all(|t| {
        check_finite(
            &t.dtype,
            &bytes[start + t.begin as usize..start + t.end as usize],
        )
        .is_ok()
    });
    match scan.outcome() {
        Outcome::Finite => assert!(finite, "the scan missed a non-finite value"),
        Outcome::NonFinite { .. } => assert!(!finite, "the scan saw a NaN that is not there"),
        Outcome::Unscanned => {}
        Outcome::NotSafetensors => panic!("a valid safetensors file was not recognised"),
    }
});

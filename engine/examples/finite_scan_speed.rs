//! The cost of the upload's NaN / infinity scan next to the sha256 the server computes over the
//! same bytes anyway (bench/push_pull.sh's 1.14 GB f32 model, in memory, 4 MiB chunks as an
//! upload delivers them):
//!
//!     cargo run --release -p clreg-engine --example finite_scan_speed
//!
//! Prints both throughputs and the scan's cost as a fraction of the hash.

use std::time::Instant;

use clreg_engine::finite_scan::{FiniteScan, Outcome};
use sha2::{Digest as _, Sha256};

fn main() {
    // One f32 tensor of 285M elements (1.14 GB), values that are all finite.
    let n: usize = 285 << 20;
    let header = format!(
        r#"{{"w": {{"dtype": "F32", "shape": [{n}], "data_offsets": [0, {}]}}}}"#,
        4 * n
    );
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header.as_bytes());
    file.extend((0..n).flat_map(|i| ((i % 1000) as f32 * 0.001).to_le_bytes()));
    let chunk = 4 << 20;
    let gb = file.len() as f64 / 1e9;

    let mut best_scan = f64::MAX;
    let mut best_hash = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let mut scan = FiniteScan::new();
        for c in file.chunks(chunk) {
            scan.update(c);
        }
        assert_eq!(scan.outcome(), Outcome::Finite);
        best_scan = best_scan.min(t.elapsed().as_secs_f64());

        let t = Instant::now();
        let mut hasher = Sha256::new();
        for c in file.chunks(chunk) {
            hasher.update(c);
        }
        std::hint::black_box(hasher.finalize());
        best_hash = best_hash.min(t.elapsed().as_secs_f64());
    }
    println!(
        "{gb:.2} GB: scan {best_scan:.3} s ({:.1} GB/s), sha256 {best_hash:.3} s ({:.1} GB/s); \
         the scan costs {:.0}% of the hash",
        gb / best_scan,
        gb / best_hash,
        100.0 * best_scan / best_hash
    );
}

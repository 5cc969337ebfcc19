//! The GGUF header and metadata checks `clreg local import-gguf` runs before converting tensors.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // candle's reader can panic on some headers (general.alignment = 0); the engine catches
    // that and refuses the file. libFuzzer's hook would abort first, so it is quietened here:
    // a panic the engine does not catch still aborts and is reported.
    std::panic::set_hook(Box::new(|_| {}));
    let _ = clreg_engine::gguf::check_header(&mut std::io::Cursor::new(data), "fuzz.gguf");
});

//! TRACE dataset validation, differentially: the in-memory parser and the streaming validator
//! the server uses accept and refuse the same inputs, and count the same examples.
#![no_main]

use clreg_engine::trace::{validate_trace, validate_trace_stream};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let whole = validate_trace(data, "d.json");
    let reader = std::io::BufReader::with_capacity(7, data);
    let streamed = validate_trace_stream(reader, "d.json");
    match (&whole, &streamed) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(a), Err(b)) => assert_eq!(a.code(), b.code()),
        _ => panic!("the validators disagree: {whole:?} vs {streamed:?}"),
    }
});

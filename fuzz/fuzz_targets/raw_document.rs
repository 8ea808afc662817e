//! `/validate_raw` bodies: see `portcullis_fuzz::raw_document`.
#![no_main]

use libfuzzer_sys::fuzz_target;

// Bodies the parser refuses stay in the corpus too: the server parses those
// as well, and they are stepping stones towards ones it accepts.
fuzz_target!(|data: &[u8]| {
    portcullis_fuzz::raw_document(data);
});

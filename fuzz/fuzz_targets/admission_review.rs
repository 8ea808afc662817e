//! AdmissionReview bodies (`/validate`, `/audit`) and bare requests (`portcullis run`): see `portcullis_fuzz::admission_review`.
#![no_main]

use libfuzzer_sys::fuzz_target;

// Bodies the parser refuses stay in the corpus too: the server parses those
// as well, and they are stepping stones towards ones it accepts.
fuzz_target!(|data: &[u8]| {
    portcullis_fuzz::admission_review(data);
});

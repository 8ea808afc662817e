//! `policies.yml` text: see `portcullis_fuzz::policies_yml`.
#![no_main]

use libfuzzer_sys::{Corpus, fuzz_target};

fuzz_target!(|data: &[u8]| -> Corpus {
    // Non-UTF-8 input never reaches the YAML parser: don't keep it.
    if portcullis_fuzz::policies_yml(data) {
        Corpus::Keep
    } else {
        Corpus::Reject
    }
});

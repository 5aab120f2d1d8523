//! Feeds arbitrary bytes to the pgoutput decoder, as if they were an `XLogData`
//! payload both outside and inside a stream. The decoder must never panic, and
//! every error must point inside the input.
//!
//! Seeds (one valid message of each type) are in `corpus/decode/seed-*`; they are
//! written by the ignored unit test `write_fuzz_seed_corpus` in
//! `src/source/pgoutput/tests.rs`.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use pgch::source::pgoutput::{decode, DecodeContext};

fuzz_target!(|data: &[u8]| {
    let buf = Bytes::copy_from_slice(data);
    for ctx in [DecodeContext::OUTSIDE_STREAM, DecodeContext::IN_STREAM] {
        match decode(&buf, ctx) {
            Ok(message) => {
                let _ = format!("{message:?}");
            }
            Err(error) => {
                assert!(
                    error.offset() <= data.len(),
                    "{error} lies beyond the {} input bytes",
                    data.len()
                );
                let _ = error.to_string();
            }
        }
    }
});

//! Feeds arbitrary bytes to the request-head parser and, when a head parses,
//! the rest to its body decoder, split at a fuzzer-chosen point. Nothing may
//! panic, the parser must never claim more bytes than it was given, and
//! splitting the input must not change the outcome.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reliw::http::{BodyDecoder, Limits, parse_head};

const LIMITS: Limits = Limits { line: 512, head: 2048, headers: 16 };

fuzz_target!(|data: &[u8]| {
    let Some((&split, input)) = data.split_first() else { return };
    let whole = parse_head(input, &LIMITS);
    if let Ok(Some((head, len))) = &whole {
        assert!(*len <= input.len());
        // A prefix that still holds the whole head parses the same.
        let again = parse_head(&input[..*len], &LIMITS);
        assert_eq!(again.ok().flatten().map(|(h, l)| (h, l)), Some((head.clone(), *len)));
        if let Ok(mut decoder) = BodyDecoder::new(head.body, 4096) {
            let body = &input[*len..];
            let cut = (split as usize).min(body.len());
            let mut total = 0usize;
            for part in [&body[..cut], &body[cut..]] {
                let mut rest = part;
                while !rest.is_empty() && !decoder.is_done() {
                    match decoder.decode(rest) {
                        Ok(out) => {
                            assert!(out.consumed <= rest.len());
                            for r in &out.data {
                                assert!(r.end <= out.consumed);
                                total += r.len();
                            }
                            if out.consumed == 0 {
                                break;
                            }
                            rest = &rest[out.consumed..];
                        }
                        Err(_) => return,
                    }
                }
            }
            assert!(total as u64 <= 4096);
            assert_eq!(decoder.received(), total as u64);
        }
    }
    // Incomplete input stays incomplete or becomes an error, never a
    // different head, as bytes are removed from the end.
    if let Ok(None) = whole {
        let cut = (split as usize).min(input.len());
        assert!(!matches!(parse_head(&input[..cut], &LIMITS), Ok(Some(_))));
    }
});

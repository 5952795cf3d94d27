//! Content codings for responses: the encoders (gzip, brotli, zstd), which
//! media types are worth encoding, and a per-worker cache of encoded forms
//! so a hot file or page is encoded once, not once per request.
//!
//! The negotiation itself is sans-IO in [`crate::http::coding`]; the site
//! step that applies all of this to a response is `site::steps::encode`.
//!
//! Encoding runs on the worker thread. Bodies above `compression.max_size`
//! (default 1 MiB) are never encoded on the fly, so one miss costs at most
//! a few milliseconds of one worker, once per form (forms are cached by a
//! validator derived from the content: a file's inode/size/mtime ETag, a
//! blob's or a page's content hash). Larger assets should ship
//! precompressed siblings (`app.js.br`), which cost nothing to serve.

use std::collections::{HashMap, VecDeque};
use std::io::Write as _;
use std::rc::Rc;

use bytes::Bytes;

use crate::config::CompressionSection;
use crate::http::coding::Coding;

/// Encodes `data` with `coding` at the configured level.
pub fn encode(coding: Coding, cfg: &CompressionSection, data: &[u8]) -> std::io::Result<Vec<u8>> {
    // Output is usually well under half the input for text.
    let mut out = Vec::with_capacity(data.len() / 3 + 64);
    match coding {
        Coding::Gzip => {
            let mut enc =
                flate2::write::GzEncoder::new(out, flate2::Compression::new(cfg.gzip_level));
            enc.write_all(data)?;
            out = enc.finish()?;
        }
        Coding::Br => {
            // The smallest window that holds the whole body (16 to 22 bits):
            // a larger one only costs memory and time.
            let bits = (usize::BITS - data.len().leading_zeros()).clamp(16, 22);
            let params = brotli::enc::BrotliEncoderParams {
                quality: cfg.brotli_level as i32,
                lgwin: bits as i32,
                size_hint: data.len(),
                ..Default::default()
            };
            let mut input = data;
            brotli::BrotliCompress(&mut input, &mut out, &params)?;
        }
        Coding::Zstd => {
            out = zstd::bulk::compress(data, cfg.zstd_level)?;
        }
    }
    Ok(out)
}

/// An encoder for a body that arrives in pieces (a proxied response):
/// each piece is flushed through, so a stream (events, long polls)
/// reaches the client as it comes, at the price of some ratio. Memory is
/// the coder's state (windows and match tables: some 100-300 KiB by
/// coding), whatever the body's size, for as long as the response lasts.
pub struct StreamEncoder {
    inner: Inner,
}

enum Inner {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Br(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl StreamEncoder {
    pub fn new(coding: Coding, cfg: &CompressionSection) -> std::io::Result<Self> {
        let inner = match coding {
            Coding::Gzip => Inner::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(cfg.gzip_level),
            )),
            // A 64 KiB window: per proxied exchange memory stays small.
            Coding::Br => Inner::Br(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                4096,
                cfg.brotli_level,
                16,
            ))),
            Coding::Zstd => {
                // Small tables too: a stream encoder lives as long as its
                // response (an event stream: hours), so its state is what
                // each such client costs (about 200 KiB here).
                let mut enc = zstd::stream::write::Encoder::new(Vec::new(), cfg.zstd_level)?;
                enc.window_log(17)?;
                enc.set_parameter(zstd::stream::raw::CParameter::HashLog(15))?;
                enc.set_parameter(zstd::stream::raw::CParameter::ChainLog(15))?;
                Inner::Zstd(enc)
            }
        };
        Ok(Self { inner })
    }

    /// Encodes `data` and appends everything that can be sent now to `out`.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<u8>) -> std::io::Result<()> {
        match &mut self.inner {
            Inner::Gzip(e) => {
                e.write_all(data)?;
                e.flush()?;
                out.append(e.get_mut());
            }
            Inner::Br(e) => {
                e.write_all(data)?;
                e.flush()?;
                out.append(e.get_mut());
            }
            Inner::Zstd(e) => {
                e.write_all(data)?;
                e.flush()?;
                out.append(e.get_mut());
            }
        }
        Ok(())
    }

    /// Ends the stream; appends its last bytes to `out`.
    pub fn finish(self, out: &mut Vec<u8>) -> std::io::Result<()> {
        let mut rest = match self.inner {
            Inner::Gzip(e) => e.finish()?,
            Inner::Br(e) => e.into_inner(),
            Inner::Zstd(e) => e.finish()?,
        };
        out.append(&mut rest);
        Ok(())
    }
}

/// Whether a `Content-Type` value names a type listed in `types` (exact
/// essence, or `type/*`).
pub fn eligible_type(content_type: &str, types: &[String]) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    let major = essence.split('/').next().unwrap_or("");
    // `types` are lower-case (the config makes them so); no allocation here:
    // this runs for every response.
    types.iter().any(|t| match t.strip_suffix("/*") {
        Some(m) => m.eq_ignore_ascii_case(major),
        None => t.eq_ignore_ascii_case(essence),
    })
}

/// An encoded form, or the note that encoding did not make it smaller
/// (then identity is sent, and the encoder is not run again).
#[derive(Clone, Debug)]
pub enum Form {
    Encoded(Bytes),
    NotSmaller,
}

impl Form {
    fn cost(&self) -> u64 {
        match self {
            Form::Encoded(b) => b.len() as u64,
            // Counted, so a flood of distinct small bodies stays bounded.
            Form::NotSmaller => 64,
        }
    }
}

/// Encoded forms by content validator, first-in first-out within a byte
/// budget (per worker, so no lock). Keyed by the validator alone: every
/// key is derived from the bytes it stands for, never taken from a Lua
/// page's or an upstream's own ETag.
pub struct Forms {
    entries: HashMap<Rc<str>, [Option<Form>; 3]>,
    order: VecDeque<(Rc<str>, Coding)>,
    bytes: u64,
    cap: u64,
}

impl Forms {
    pub fn new(cap: u64) -> Self {
        Self {
            entries: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            cap,
        }
    }

    pub fn get(&self, key: &str, coding: Coding) -> Option<Form> {
        self.entries.get(key)?[coding.index()].clone()
    }

    /// Keeps `form`, evicting the oldest forms to stay in budget; a form
    /// larger than the whole budget is not kept.
    pub fn insert(&mut self, key: Rc<str>, coding: Coding, form: Form) {
        let cost = form.cost();
        if cost > self.cap {
            return;
        }
        if self.get(&key, coding).is_some() {
            self.forget(&key, coding);
            self.order.retain(|(k, c)| !(*c == coding && **k == *key));
        }
        while self.bytes + cost > self.cap {
            let Some((old, c)) = self.order.pop_front() else {
                break;
            };
            self.forget(&old, c);
        }
        self.entries.entry(Rc::clone(&key)).or_default()[coding.index()] = Some(form);
        self.bytes += cost;
        self.order.push_back((key, coding));
    }

    fn forget(&mut self, key: &str, coding: Coding) {
        let Some(slots) = self.entries.get_mut(key) else {
            return;
        };
        if let Some(form) = slots[coding.index()].take() {
            self.bytes -= form.cost();
        }
        if slots.iter().all(Option::is_none) {
            self.entries.remove(key);
        }
    }

    /// Bytes of encoded forms held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    fn text(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| b"<p>reliw serves pages</p>\n"[i % 26])
            .collect()
    }

    #[test]
    fn every_coding_round_trips() {
        let cfg = CompressionSection::default();
        let data = text(100_000);
        let gz = encode(Coding::Gzip, &cfg, &data).unwrap_or_default();
        let mut back = Vec::new();
        assert!(
            flate2::read::GzDecoder::new(&gz[..])
                .read_to_end(&mut back)
                .is_ok()
        );
        assert_eq!(back, data);
        let br = encode(Coding::Br, &cfg, &data).unwrap_or_default();
        let mut back = Vec::new();
        assert!(brotli::BrotliDecompress(&mut &br[..], &mut back).is_ok());
        assert_eq!(back, data);
        let zs = encode(Coding::Zstd, &cfg, &data).unwrap_or_default();
        assert_eq!(
            zstd::bulk::decompress(&zs, 200_000).unwrap_or_default(),
            data
        );
        for encoded in [gz, br, zs] {
            assert!(encoded.len() < data.len() / 10, "{}", encoded.len());
        }
    }

    #[test]
    fn streams_decode_to_their_pieces_for_every_coding() {
        let cfg = CompressionSection::default();
        let data = text(50_000);
        for coding in Coding::ALL {
            let mut enc = StreamEncoder::new(coding, &cfg).unwrap_or_else(|e| panic!("{e}"));
            let mut out = Vec::new();
            for piece in data.chunks(7_000) {
                let before = out.len();
                assert!(enc.push(piece, &mut out).is_ok());
                // Flushed: every piece yields bytes at once.
                assert!(out.len() > before, "{coding:?}");
            }
            assert!(enc.finish(&mut out).is_ok());
            let mut back = Vec::new();
            let whole = match coding {
                Coding::Gzip => flate2::read::GzDecoder::new(&out[..])
                    .read_to_end(&mut back)
                    .is_ok(),
                Coding::Br => brotli::BrotliDecompress(&mut &out[..], &mut back).is_ok(),
                Coding::Zstd => zstd::stream::decode_all(&out[..]).map(|b| back = b).is_ok(),
            };
            assert!(whole, "{coding:?}: the stream did not end cleanly");
            assert_eq!(back, data, "{coding:?}");
            assert!(out.len() < data.len() / 4, "{coding:?}: {}", out.len());
        }
    }

    #[test]
    fn types_match_by_essence_or_major_type() {
        let types: Vec<String> = ["text/*", "application/json", "image/svg+xml"]
            .map(String::from)
            .to_vec();
        assert!(eligible_type("text/html; charset=utf-8", &types));
        assert!(eligible_type("Application/JSON", &types));
        assert!(eligible_type("image/svg+xml", &types));
        assert!(!eligible_type("image/png", &types));
        assert!(!eligible_type("application/json-seq", &types));
        assert!(!eligible_type("", &types));
    }

    #[test]
    fn forms_stay_in_their_budget() {
        let mut forms = Forms::new(100);
        let key = |s: &str| Rc::<str>::from(s);
        forms.insert(
            key("a"),
            Coding::Br,
            Form::Encoded(Bytes::from(vec![0; 60])),
        );
        forms.insert(
            key("b"),
            Coding::Gzip,
            Form::Encoded(Bytes::from(vec![0; 30])),
        );
        assert!(forms.get("a", Coding::Br).is_some());
        assert!(forms.get("a", Coding::Gzip).is_none());
        // Over budget: the oldest goes.
        forms.insert(
            key("c"),
            Coding::Zstd,
            Form::Encoded(Bytes::from(vec![0; 50])),
        );
        assert!(forms.get("a", Coding::Br).is_none());
        assert!(forms.get("b", Coding::Gzip).is_some());
        assert_eq!(forms.bytes(), 80);
        // Too large for the budget: not kept, nothing evicted.
        forms.insert(
            key("d"),
            Coding::Br,
            Form::Encoded(Bytes::from(vec![0; 101])),
        );
        assert!(forms.get("d", Coding::Br).is_none());
        assert_eq!(forms.bytes(), 80);
        // Replacing a form accounts for the old one (and a marker costs
        // something, so markers alone cannot grow without bound).
        forms.insert(key("b"), Coding::Gzip, Form::NotSmaller);
        assert!(matches!(
            forms.get("b", Coding::Gzip),
            Some(Form::NotSmaller)
        ));
        assert!(forms.get("c", Coding::Zstd).is_none());
        assert_eq!(forms.bytes(), 64);
    }
}

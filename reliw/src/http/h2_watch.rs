//! Flood detection for HTTP/2, sans-IO: the bytes a client sends pass
//! through [`FrameWatch`] on their way to the codec, which follows only the
//! 9-byte frame headers and counts the frames that cost a server work
//! without giving it a request: PING, SETTINGS, RST_STREAM (rapid reset,
//! CVE-2023-44487), PRIORITY, empty DATA and CONTINUATION frames
//! (CVE-2019-9512/9513/9518, CVE-2024-27316). Past `limit` of one kind in a
//! window it names the flood; the connection driver answers with a GOAWAY.
//! (The codec bounds CONTINUATIONs per header block itself, and rapid
//! resets of streams it has not handed out yet: its GOAWAYs are counted as
//! `enhance_your_calm`.)

use std::time::{Duration, Instant};

/// The connection preface a client sends before its first frame.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long frame counts add up before they start again.
pub const WINDOW: Duration = Duration::from_secs(10);

/// The kind of flood a connection sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flood {
    Ping,
    Settings,
    Reset,
    Priority,
    EmptyFrames,
    Continuation,
}

impl Flood {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ping => "ping",
            Self::Settings => "settings",
            Self::Reset => "reset",
            Self::Priority => "priority",
            Self::EmptyFrames => "empty_frames",
            Self::Continuation => "continuation",
        }
    }

    const ALL: [Self; 6] = [
        Self::Ping,
        Self::Settings,
        Self::Reset,
        Self::Priority,
        Self::EmptyFrames,
        Self::Continuation,
    ];
}

/// Follows a client's frames and counts the costly ones.
#[derive(Debug)]
pub struct FrameWatch {
    limit: u32,
    /// Preface bytes still to pass.
    preface_left: usize,
    header: [u8; 9],
    header_len: usize,
    /// Payload bytes of the current frame still to pass.
    payload_left: usize,
    counts: [u32; Flood::ALL.len()],
    window_start: Option<Instant>,
}

impl FrameWatch {
    /// `limit`: frames of one kind per [`WINDOW`].
    pub fn new(limit: u32) -> Self {
        Self {
            limit,
            preface_left: PREFACE.len(),
            header: [0; 9],
            header_len: 0,
            payload_left: 0,
            counts: [0; Flood::ALL.len()],
            window_start: None,
        }
    }

    /// Follows `bytes`, the next the client sent.
    pub fn feed(&mut self, mut bytes: &[u8], now: Instant) -> Result<(), Flood> {
        match self.window_start {
            Some(start) if now.duration_since(start) < WINDOW => {}
            _ => {
                self.window_start = Some(now);
                self.counts = [0; Flood::ALL.len()];
            }
        }
        let skip = self.preface_left.min(bytes.len());
        self.preface_left -= skip;
        bytes = &bytes[skip..];
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let n = self.payload_left.min(bytes.len());
                self.payload_left -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (9 - self.header_len).min(bytes.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
            self.header_len += n;
            bytes = &bytes[n..];
            if self.header_len == 9 {
                self.header_len = 0;
                self.frame()?;
            }
        }
        Ok(())
    }

    /// One whole frame header.
    fn frame(&mut self) -> Result<(), Flood> {
        let h = self.header;
        let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
        let (kind, flags) = (h[3], h[4]);
        self.payload_left = len;
        const END_STREAM: u8 = 0x1;
        const ACK: u8 = 0x1;
        match kind {
            0x0 if len == 0 && flags & END_STREAM == 0 => self.count(Flood::EmptyFrames)?,
            0x2 => self.count(Flood::Priority)?,
            0x3 => self.count(Flood::Reset)?,
            0x4 if flags & ACK == 0 => self.count(Flood::Settings)?,
            0x6 if flags & ACK == 0 => self.count(Flood::Ping)?,
            0x9 if len == 0 => self.count(Flood::Continuation)?,
            _ => {}
        }
        Ok(())
    }

    fn count(&mut self, kind: Flood) -> Result<(), Flood> {
        let i = Flood::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        self.counts[i] += 1;
        if self.counts[i] > self.limit {
            return Err(kind);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&1u32.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn ordinary_traffic_passes_in_any_split() {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(0x4, 0, &[0; 12]));
        bytes.extend(frame(0x1, 0x5, &[0x82; 30]));
        bytes.extend(frame(0x0, 0x1, &[b'x'; 100]));
        bytes.extend(frame(0x6, 0x1, &[0; 8]));
        for split in [1, 3, 9, 10, 40, bytes.len()] {
            let mut watch = FrameWatch::new(10);
            let now = Instant::now();
            for piece in bytes.chunks(split) {
                assert_eq!(watch.feed(piece, now), Ok(()));
            }
            assert_eq!(watch.payload_left, 0);
            assert_eq!(watch.header_len, 0);
        }
    }

    #[test]
    fn each_flood_is_named_past_its_limit() {
        for (kind, flags, payload, flood) in [
            (0x6u8, 0u8, &[0u8; 8][..], Flood::Ping),
            (0x4, 0, &[][..], Flood::Settings),
            (0x3, 0, &[0; 4][..], Flood::Reset),
            (0x2, 0, &[0; 5][..], Flood::Priority),
            (0x0, 0, &[][..], Flood::EmptyFrames),
            (0x9, 0, &[][..], Flood::Continuation),
        ] {
            let mut watch = FrameWatch::new(10);
            let now = Instant::now();
            watch.feed(PREFACE, now).unwrap();
            let f = frame(kind, flags, payload);
            for _ in 0..10 {
                assert_eq!(watch.feed(&f, now), Ok(()), "{flood:?}");
            }
            assert_eq!(watch.feed(&f, now), Err(flood));
        }
    }

    #[test]
    fn acks_and_data_that_ends_a_stream_are_not_counted() {
        let mut watch = FrameWatch::new(10);
        let now = Instant::now();
        watch.feed(PREFACE, now).unwrap();
        for _ in 0..50 {
            watch.feed(&frame(0x6, 0x1, &[0; 8]), now).unwrap();
            watch.feed(&frame(0x4, 0x1, &[]), now).unwrap();
            watch.feed(&frame(0x0, 0x1, &[]), now).unwrap();
        }
    }

    #[test]
    fn counts_start_again_with_a_new_window() {
        let mut watch = FrameWatch::new(10);
        let t0 = Instant::now();
        watch.feed(PREFACE, t0).unwrap();
        let ping = frame(0x6, 0, &[0; 8]);
        for _ in 0..10 {
            watch.feed(&ping, t0).unwrap();
        }
        let later = t0 + WINDOW;
        for _ in 0..10 {
            assert_eq!(watch.feed(&ping, later), Ok(()));
        }
    }
}

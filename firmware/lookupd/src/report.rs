//! Reports of the lookup loop: JSON lines on stdout, and the same lookup reports as
//! postcard-encoded, COBS-delimited frames on a serial line (a till, a PLC).
//!
//! A [`LookupReport`] is fixed-size (heapless): building, encoding and writing one allocates
//! nothing. A frame decodes back to the very same report, so `lookupd decode-serial` prints the
//! JSON lines the appliance printed.

use std::io::{self, BufRead, Write};

use serde::{Deserialize, Serialize};

use crate::appliance::{Lookup, Verdict};
use crate::frame::{FRAME_LABEL_BYTES, push_truncated};

/// Hits a report carries at most (the loop's `k` is limited to it).
pub const REPORT_HITS: usize = 10;
/// Bytes of a SKU in a report; longer SKUs are cut at a character boundary.
pub const SKU_BYTES: usize = 64;
/// Bytes of a trigger's name in a report.
pub const TRIGGER_BYTES: usize = 48;
/// The largest encoded frame (postcard with COBS and the delimiter).
pub const MAX_FRAME_BYTES: usize = 2048;

/// One hit of a report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportHit {
    pub id: u64,
    pub sku: heapless::String<SKU_BYTES>,
    pub distance: u32,
}

/// Per-stage wall time of a lookup, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportTimings {
    /// Age of the frame when the lookup started (capture to trigger handling).
    pub capture_age: u64,
    pub preprocess: u64,
    pub infer: u64,
    pub search: u64,
    /// Trigger to report: the frame's wait, preprocess, infer, search and the report itself.
    pub total: u64,
}

/// One lookup, as reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupReport {
    /// Numbers the lookups of a run from 1.
    pub seq: u64,
    /// Unix time of the trigger, in milliseconds.
    pub time_ms: u64,
    pub trigger: heapless::String<TRIGGER_BYTES>,
    /// The frame's label: the replayed file, or the camera's frame number.
    pub frame: heapless::String<FRAME_LABEL_BYTES>,
    pub verdict: Verdict,
    pub hits: heapless::Vec<ReportHit, REPORT_HITS>,
    pub timings_us: ReportTimings,
}

impl LookupReport {
    /// An empty report, to be filled by [`LookupReport::fill`] again and again.
    pub fn new() -> Self {
        Self {
            seq: 0,
            time_ms: 0,
            trigger: heapless::String::new(),
            frame: heapless::String::new(),
            verdict: Verdict::Unknown,
            hits: heapless::Vec::new(),
            timings_us: ReportTimings::default(),
        }
    }

    /// Fills the report from a lookup (at most [`REPORT_HITS`] hits), without allocating.
    pub fn fill(
        &mut self,
        seq: u64,
        time_ms: u64,
        trigger: &str,
        frame: &str,
        capture_age: u64,
        lookup: &Lookup<'_>,
    ) {
        self.seq = seq;
        self.time_ms = time_ms;
        self.trigger.clear();
        push_truncated(&mut self.trigger, trigger);
        self.frame.clear();
        push_truncated(&mut self.frame, frame);
        self.verdict = lookup.verdict;
        self.hits.clear();
        for hit in lookup.hits().take(REPORT_HITS) {
            let mut sku = heapless::String::new();
            push_truncated(&mut sku, hit.sku);
            // Cannot fail: at most REPORT_HITS are taken.
            let _ = self.hits.push(ReportHit {
                id: hit.id,
                sku,
                distance: hit.distance,
            });
        }
        let t = lookup.timings;
        self.timings_us = ReportTimings {
            capture_age,
            preprocess: t.preprocess,
            infer: t.infer,
            search: t.search,
            total: t.total,
        };
    }

    /// The top hit's SKU, unless the verdict is unknown.
    pub fn known_sku(&self) -> Option<&str> {
        match self.verdict {
            Verdict::Known => self.hits.first().map(|h| h.sku.as_str()),
            Verdict::Unknown => None,
        }
    }
}

impl Default for LookupReport {
    fn default() -> Self {
        Self::new()
    }
}

/// A line of the JSON-lines report stream; `event` names its kind.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Line<'a> {
    /// The loop is running.
    Started {
        time_ms: u64,
        bundle: &'a str,
        items: usize,
        backend: &'a str,
        camera: &'a str,
        triggers: &'a [String],
    },
    /// A lookup.
    Lookup(&'a LookupReport),
    /// The frame was enrolled as a new item.
    Enrolled {
        time_ms: u64,
        id: u64,
        sku: &'a str,
        frame: &'a str,
    },
    /// Something is wrong (`source`: camera, trigger, enroll, lookup); the loop goes on.
    Fault {
        time_ms: u64,
        source: &'a str,
        message: &'a str,
    },
    /// A fault of `source` is over.
    Recovered { time_ms: u64, source: &'a str },
    /// The loop has ended (a signal, or the end of stdin).
    Stopped {
        time_ms: u64,
        lookups: u64,
        faults: u64,
        reason: &'a str,
    },
}

/// Writes `line` as one JSON line through `scratch` (reused: no allocation once it is large
/// enough) and flushes.
pub fn write_line(out: &mut impl Write, scratch: &mut Vec<u8>, line: &Line<'_>) -> io::Result<()> {
    scratch.clear();
    serde_json::to_writer(&mut *scratch, line).map_err(io::Error::other)?;
    scratch.push(b'\n');
    out.write_all(scratch)?;
    out.flush()
}

/// Encodes a report as one COBS frame ending with its 0 delimiter, into `buf`.
pub fn encode_frame<'b>(report: &LookupReport, buf: &'b mut [u8]) -> io::Result<&'b [u8]> {
    postcard::to_slice_cobs(report, buf)
        .map(|frame| &*frame)
        .map_err(|e| io::Error::other(format!("report does not fit a serial frame: {e}")))
}

/// Reads COBS frames from `input` (damaged or oversized frames are reported on the error
/// callback and skipped, as a receiver on a noisy line must) and writes each report as a JSON
/// line. Returns the number of reports decoded.
pub fn decode_stream(
    input: &mut impl BufRead,
    out: &mut impl Write,
    mut on_bad_frame: impl FnMut(usize, &str),
) -> io::Result<u64> {
    let mut frame = Vec::with_capacity(MAX_FRAME_BYTES);
    let mut scratch = Vec::new();
    let (mut decoded, mut index) = (0, 0);
    loop {
        frame.clear();
        let n = input.read_until(0, &mut frame)?;
        if n == 0 {
            return Ok(decoded);
        }
        index += 1;
        if frame.last() != Some(&0) {
            on_bad_frame(index, "the stream ends inside a frame");
            return Ok(decoded);
        }
        match postcard::from_bytes_cobs::<LookupReport>(&mut frame) {
            Ok(report) => {
                write_line(out, &mut scratch, &Line::Lookup(&report))?;
                decoded += 1;
            }
            Err(e) => on_bad_frame(index, &e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(seq: u64) -> LookupReport {
        let mut r = LookupReport::new();
        r.seq = seq;
        r.time_ms = 1_790_000_000_000 + seq;
        push_truncated(&mut r.trigger, "gpio:gpiochip0:17:active-low");
        push_truncated(&mut r.frame, "item-0003/view-02.png");
        r.verdict = Verdict::Known;
        for i in 0..REPORT_HITS as u64 {
            let mut sku = heapless::String::new();
            push_truncated(&mut sku, &format!("SKU-{i}-ünïcode"));
            r.hits
                .push(ReportHit {
                    id: i * 1_000_003,
                    sku,
                    distance: i as u32 * 7,
                })
                .unwrap();
        }
        r.timings_us = ReportTimings {
            capture_age: 1,
            preprocess: 2,
            infer: 3,
            search: 4,
            total: 5,
        };
        r
    }

    #[test]
    fn frames_decode_back_to_the_same_json_lines() {
        let reports = [report(1), report(2), LookupReport::new()];
        let mut stream = Vec::new();
        let mut json = Vec::new();
        let mut scratch = Vec::new();
        let mut buf = [0u8; MAX_FRAME_BYTES];
        for r in &reports {
            stream.extend_from_slice(encode_frame(r, &mut buf).unwrap());
            write_line(&mut json, &mut scratch, &Line::Lookup(r)).unwrap();
        }
        assert_eq!(
            stream.iter().filter(|&&b| b == 0).count(),
            3,
            "one delimiter a frame"
        );
        let mut decoded = Vec::new();
        let n = decode_stream(&mut stream.as_slice(), &mut decoded, |i, e| {
            panic!("frame {i}: {e}")
        })
        .unwrap();
        assert_eq!(n, 3);
        assert_eq!(
            String::from_utf8(decoded).unwrap(),
            String::from_utf8(json).unwrap()
        );
    }

    #[test]
    fn damaged_frames_are_skipped_and_named() {
        let mut buf = [0u8; MAX_FRAME_BYTES];
        let mut stream = encode_frame(&report(1), &mut buf).unwrap().to_vec();
        stream[5] ^= 0x40; // a flipped bit inside the first frame
        stream.extend_from_slice(encode_frame(&report(2), &mut buf).unwrap());
        stream.extend_from_slice(&[3, 1, 2]); // a frame cut off by the end of the stream
        let mut out = Vec::new();
        let mut bad = Vec::new();
        let n = decode_stream(&mut stream.as_slice(), &mut out, |i, e| {
            bad.push((i, e.to_string()))
        })
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("\"seq\":2"), "{text}");
        assert!(n <= 2 && !bad.is_empty(), "decoded {n}, bad {bad:?}");
        assert!(
            bad.iter()
                .any(|(i, e)| *i == 3 && e.contains("ends inside")),
            "{bad:?}"
        );
    }

    #[test]
    fn json_lines_name_their_event() {
        let mut out = Vec::new();
        let mut scratch = Vec::new();
        write_line(
            &mut out,
            &mut scratch,
            &Line::Fault {
                time_ms: 1,
                source: "camera",
                message: "gone",
            },
        )
        .unwrap();
        write_line(&mut out, &mut scratch, &Line::Lookup(&report(4))).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["event"], "fault");
        assert_eq!(lines[0]["source"], "camera");
        assert_eq!(lines[1]["event"], "lookup");
        assert_eq!(lines[1]["verdict"], "known");
        assert_eq!(lines[1]["hits"][0]["sku"], "SKU-0-ünïcode");
        assert_eq!(lines[1]["timings_us"]["infer"], 3);
    }
}

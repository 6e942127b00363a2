//! Encodings: which character encoding an upload is saved in, and a reader that turns the
//! other encodings into UTF-8.
//!
//! Forces save their files with Excel and with their records systems. Excel's "CSV UTF-8" is
//! UTF-8 with a byte-order mark; its "CSV (Comma delimited)" is Windows-1252, the "ANSI" code
//! page of English Windows; its "Unicode Text" is UTF-16 little-endian with a byte-order mark.
//! [`detect`] looks once at the first bytes of an upload (the decoder's first chunk), and only
//! a file that is not UTF-8 is read through a [`Source::Transcoded`] reader, so a UTF-8 file
//! (nearly every upload) reaches the decoder as it is, at no cost.
//!
//! The rules, in order:
//! - a byte-order mark decides: UTF-8, UTF-16 little-endian or UTF-16 big-endian;
//! - without one, UTF-16 is recognised by its zero bytes: text in the Latin alphabet has a zero
//!   in every other byte, at odd positions in little-endian and even ones in big-endian;
//! - bytes that are valid UTF-8 are UTF-8 (plain ASCII included);
//! - bytes that are not valid UTF-8 are Windows-1252 only when no UTF-8 character of two or
//!   more bytes is among them and none of the five bytes Windows-1252 leaves undefined (0x81,
//!   0x8D, 0x8F, 0x90, 0x9D) is. A file that mixes UTF-8 characters with stray bytes is *not*
//!   reinterpreted: reading it either way would garble part of it, so it is read as UTF-8 and
//!   every cell holding a stray byte is reported (`encoding_invalid_utf8`) for the force to fix.
//!
//! Nothing is replaced silently. A byte Windows-1252 does not define, a UTF-16 surrogate
//! without its pair and half a UTF-16 unit at the end of the file all come out as bytes that
//! are not UTF-8, so the decoder reports the cells holding them; [`Encoding::describe_invalid`]
//! says in words what each was.

use std::io::Read;

/// How an upload's text is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// UTF-8 (ASCII included).
    Utf8,
    /// UTF-16, little-endian unless `big_endian`.
    Utf16 {
        /// Most significant byte first.
        big_endian: bool,
    },
    /// Windows-1252 ("ANSI" on English Windows; a superset of Latin-1's printable characters).
    Windows1252,
}

/// What [`detect`] concluded from the first bytes of an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detected {
    /// The encoding the file is read in.
    pub encoding: Encoding,
    /// Length of the byte-order mark at the start (0 when there is none).
    pub bom: usize,
    /// Why a file read as UTF-8 was not read as Windows-1252, when its first bytes hold bytes
    /// that are not UTF-8 or hold nothing but ASCII.
    pub utf8_because: Utf8Because,
    /// For Windows-1252, the first byte above ASCII (shown in the note to the force).
    pub example: Option<u8>,
}

/// Why a file is read as UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Utf8Because {
    /// Its first bytes are valid UTF-8 with at least one character beyond ASCII (or it has a
    /// UTF-8 byte-order mark).
    Valid,
    /// Its first bytes are plain ASCII, which reads alike in UTF-8 and Windows-1252.
    Ascii,
    /// Its first bytes mix UTF-8 characters with bytes that are not UTF-8.
    Mixed,
    /// Its first bytes hold a byte Windows-1252 does not define.
    Undefined1252,
}

const UTF8_BOM: &[u8] = b"\xef\xbb\xbf";

/// The five bytes Windows-1252 does not define.
const UNDEFINED_1252: [u8; 5] = [0x81, 0x8D, 0x8F, 0x90, 0x9D];

/// Decides how `head`, the first bytes of a file, is encoded (`eof`: `head` is the whole file,
/// so a character cut at its end is not merely cut by the chunk).
pub fn detect(head: &[u8], eof: bool) -> Detected {
    let utf8 = |bom, utf8_because| Detected {
        encoding: Encoding::Utf8,
        bom,
        utf8_because,
        example: None,
    };
    let utf16 = |big_endian, bom| Detected {
        encoding: Encoding::Utf16 { big_endian },
        bom,
        utf8_because: Utf8Because::Valid,
        example: None,
    };
    if head.starts_with(UTF8_BOM) {
        return utf8(UTF8_BOM.len(), Utf8Because::Valid);
    }
    if head.starts_with(b"\xff\xfe") {
        return utf16(false, 2);
    }
    if head.starts_with(b"\xfe\xff") {
        return utf16(true, 2);
    }
    if let Some(big_endian) = utf16_without_bom(head) {
        return utf16(big_endian, 0);
    }
    let scan = Utf8Scan::of(head, eof);
    if scan.invalid == 0 {
        let because = if scan.multibyte == 0 {
            Utf8Because::Ascii
        } else {
            Utf8Because::Valid
        };
        return utf8(0, because);
    }
    if scan.multibyte > 0 {
        return utf8(0, Utf8Because::Mixed);
    }
    if head.iter().any(|b| UNDEFINED_1252.contains(b)) {
        return utf8(0, Utf8Because::Undefined1252);
    }
    Detected {
        encoding: Encoding::Windows1252,
        bom: 0,
        utf8_because: Utf8Because::Valid,
        example: head.iter().copied().find(|b| !b.is_ascii()),
    }
}

/// `Some(big_endian)` when `head` looks like UTF-16 without a byte-order mark: in its first 1,024
/// pairs of bytes, at least seven in ten have a zero at the same position (odd for little-endian,
/// even for big-endian) and almost none at the other.
fn utf16_without_bom(head: &[u8]) -> Option<bool> {
    let sample = &head[..head.len().min(2048)];
    let pairs = sample.len() / 2;
    if pairs < 2 {
        return None;
    }
    let (mut zero_even, mut zero_odd) = (0, 0);
    for pair in sample.chunks_exact(2) {
        match (pair[0], pair[1]) {
            (0, 0) => {}
            (0, _) => zero_even += 1,
            (_, 0) => zero_odd += 1,
            _ => {}
        }
    }
    let most = |n: usize| n * 10 >= pairs * 7;
    let few = |n: usize| n * 20 <= pairs;
    if most(zero_odd) && few(zero_even) {
        Some(false)
    } else if most(zero_even) && few(zero_odd) {
        Some(true)
    } else {
        None
    }
}

/// Counts of a UTF-8 validation of some bytes.
struct Utf8Scan {
    /// Valid characters of two to four bytes.
    multibyte: usize,
    /// Bytes that are not part of a valid character (a character cut at the end of a chunk
    /// that is not the end of the file is not counted).
    invalid: usize,
}

impl Utf8Scan {
    fn of(mut bytes: &[u8], eof: bool) -> Utf8Scan {
        let mut scan = Utf8Scan {
            multibyte: 0,
            invalid: 0,
        };
        loop {
            match std::str::from_utf8(bytes) {
                Ok(text) => {
                    scan.multibyte += text.chars().filter(|c| !c.is_ascii()).count();
                    return scan;
                }
                Err(e) => {
                    let (valid, rest) = bytes.split_at(e.valid_up_to());
                    scan.multibyte += std::str::from_utf8(valid)
                        .map_or(0, |t| t.chars().filter(|c| !c.is_ascii()).count());
                    let Some(n) = e.error_len() else {
                        // The bytes end inside a character: cut by the chunk, or by the end of
                        // the file.
                        if eof {
                            scan.invalid += rest.len();
                        }
                        return scan;
                    };
                    scan.invalid += n;
                    bytes = &rest[n..];
                }
            }
        }
    }
}

impl Encoding {
    /// The encoding's name as forces know it.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Utf8 => "UTF-8",
            Encoding::Utf16 { big_endian: false } => "UTF-16 (little-endian)",
            Encoding::Utf16 { big_endian: true } => "UTF-16 (big-endian)",
            Encoding::Windows1252 => "Windows-1252 (\"ANSI\")",
        }
    }

    /// In words, what the bytes at the start of `bad` were in the original file, where `bad`
    /// starts at the first byte of a cell that is not UTF-8 after reading the file in this
    /// encoding; `because` is why a UTF-8 file was read as UTF-8.
    pub fn describe_invalid(self, bad: &[u8], because: Utf8Because) -> String {
        let first = bad.first().copied().unwrap_or(0);
        match self {
            Encoding::Utf8 => {
                let meaning = windows_1252_char(first)
                    .map(|c| format!(" (in Windows-1252 it is `{c}`)"))
                    .unwrap_or_default();
                let why = match because {
                    Utf8Because::Mixed => {
                        "; the file also holds UTF-8 characters, so it was not read as Windows-1252: part of it was saved in another encoding"
                    }
                    Utf8Because::Ascii => {
                        "; the start of the file is plain ASCII, so the file was read as UTF-8: it looks saved as Windows-1252 or Latin-1"
                    }
                    Utf8Because::Undefined1252 => {
                        "; the file holds bytes that no Windows-1252 text has, so it was read as UTF-8"
                    }
                    Utf8Because::Valid => {
                        "; the file is UTF-8 elsewhere: part of it was saved in another encoding"
                    }
                };
                format!("0x{first:02X} is not UTF-8{meaning}{why}")
            }
            Encoding::Windows1252 => {
                format!("0x{first:02X} is a byte Windows-1252 does not define")
            }
            Encoding::Utf16 { .. } => match unpaired_surrogate(bad) {
                Some(unit) => {
                    format!(
                        "U+{unit:04X} is half of a UTF-16 surrogate pair, without its other half"
                    )
                }
                None => "the file ends with half a UTF-16 character".to_owned(),
            },
        }
    }
}

/// The surrogate `bad` starts with, as [`Transcoder`] writes one it cannot pair (the three
/// bytes UTF-8 would use for it, which UTF-8 forbids).
fn unpaired_surrogate(bad: &[u8]) -> Option<u16> {
    match bad {
        [0xED, b1 @ 0xA0..=0xBF, b2 @ 0x80..=0xBF, ..] => {
            Some(0xD000 | (u16::from(b1 & 0x3F) << 6) | u16::from(b2 & 0x3F))
        }
        _ => None,
    }
}

/// Windows-1252's characters for the bytes 0x80 to 0x9F (`None`: undefined); the bytes 0xA0 to
/// 0xFF are the code points U+00A0 to U+00FF, as in Latin-1.
const WINDOWS_1252_HIGH: [Option<char>; 32] = [
    Some('\u{20AC}'),
    None,
    Some('\u{201A}'),
    Some('\u{0192}'),
    Some('\u{201E}'),
    Some('\u{2026}'),
    Some('\u{2020}'),
    Some('\u{2021}'),
    Some('\u{02C6}'),
    Some('\u{2030}'),
    Some('\u{0160}'),
    Some('\u{2039}'),
    Some('\u{0152}'),
    None,
    Some('\u{017D}'),
    None,
    None,
    Some('\u{2018}'),
    Some('\u{2019}'),
    Some('\u{201C}'),
    Some('\u{201D}'),
    Some('\u{2022}'),
    Some('\u{2013}'),
    Some('\u{2014}'),
    Some('\u{02DC}'),
    Some('\u{2122}'),
    Some('\u{0161}'),
    Some('\u{203A}'),
    Some('\u{0153}'),
    None,
    Some('\u{017E}'),
    Some('\u{0178}'),
];

/// The character a byte stands for in Windows-1252 (`None` for the five undefined bytes).
pub fn windows_1252_char(byte: u8) -> Option<char> {
    match byte {
        0x80..=0x9F => WINDOWS_1252_HIGH[usize::from(byte - 0x80)],
        _ => Some(char::from(byte)),
    }
}

/// Size of the raw chunks a [`Transcoder`] reads.
const RAW_CHUNK: usize = 64 * 1024;

/// Reads a file in UTF-16 or Windows-1252 as UTF-8 (a UTF-8 file passes through unchanged).
/// Characters it cannot convert come out as bytes that are not UTF-8 (see the module comment).
pub struct Transcoder<R> {
    input: R,
    encoding: Encoding,
    /// Raw bytes read and not yet converted: `raw[start..end]`.
    raw: Vec<u8>,
    start: usize,
    end: usize,
    /// The input is exhausted.
    eof: bool,
    /// Raw bytes read from the input so far.
    consumed: u64,
    /// Converted bytes of one character that did not fit the caller's buffer.
    pending: [u8; 4],
    pending_start: usize,
    pending_len: usize,
}

impl<R: Read> Transcoder<R> {
    /// A reader of `input` in `encoding`, whose first bytes `head` (of which `skip`, a byte-order
    /// mark, are not text) were already read from it; `eof` when `head` is the whole input.
    pub fn new(input: R, encoding: Encoding, head: Vec<u8>, skip: usize, eof: bool) -> Self {
        let consumed = head.len() as u64;
        let end = head.len();
        Transcoder {
            input,
            encoding,
            raw: head,
            start: skip.min(end),
            end,
            eof,
            consumed,
            pending: [0; 4],
            pending_start: 0,
            pending_len: 0,
        }
    }

    /// Raw bytes read from the input so far.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Makes at least `want` raw bytes available unless the input ends first; returns how many
    /// are available.
    fn fill(&mut self, want: usize) -> std::io::Result<usize> {
        while self.end - self.start < want && !self.eof {
            if self.start > 0 {
                self.raw.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.raw.len() < self.end + RAW_CHUNK {
                self.raw.resize(self.end + RAW_CHUNK, 0);
            }
            match self.input.read(&mut self.raw[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    self.end += n;
                    self.consumed += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(self.end - self.start)
    }

    /// Converts the next character into `out` (at most four bytes); `None` at the end.
    fn next_char(&mut self, out: &mut [u8; 4]) -> std::io::Result<Option<usize>> {
        match self.encoding {
            Encoding::Utf8 | Encoding::Windows1252 => {
                if self.fill(1)? == 0 {
                    return Ok(None);
                }
                let byte = self.raw[self.start];
                self.start += 1;
                if self.encoding == Encoding::Utf8 {
                    out[0] = byte;
                    return Ok(Some(1));
                }
                if let Some(c) = windows_1252_char(byte) {
                    return Ok(Some(c.encode_utf8(out).len()));
                }
                // Undefined: the byte itself (0x81..0x9D), which UTF-8 never starts a character
                // with.
                out[0] = byte;
                Ok(Some(1))
            }
            Encoding::Utf16 { big_endian } => {
                let available = self.fill(2)?;
                if available == 0 {
                    return Ok(None);
                }
                if available == 1 {
                    // Half a unit at the end of the file: 0xFF is never UTF-8.
                    self.start += 1;
                    out[0] = 0xFF;
                    return Ok(Some(1));
                }
                let unit = self.unit(self.start, big_endian);
                self.start += 2;
                if (0xD800..0xDC00).contains(&unit) && self.fill(2)? >= 2 {
                    let low = self.unit(self.start, big_endian);
                    if (0xDC00..0xE000).contains(&low) {
                        self.start += 2;
                        let c = 0x10000
                            + ((u32::from(unit) - 0xD800) << 10)
                            + (u32::from(low) - 0xDC00);
                        let c = char::from_u32(c).expect("a surrogate pair is a character");
                        return Ok(Some(c.encode_utf8(out).len()));
                    }
                }
                if let Some(c) = char::from_u32(u32::from(unit)) {
                    return Ok(Some(c.encode_utf8(out).len()));
                }
                // An unpaired surrogate, written as UTF-8 would write it were it allowed: three
                // bytes that are not valid UTF-8.
                out[0] = 0xED;
                out[1] = 0x80 | ((unit >> 6) & 0x3F) as u8;
                out[2] = 0x80 | (unit & 0x3F) as u8;
                Ok(Some(3))
            }
        }
    }

    fn unit(&self, at: usize, big_endian: bool) -> u16 {
        let pair = [self.raw[at], self.raw[at + 1]];
        if big_endian {
            u16::from_be_bytes(pair)
        } else {
            u16::from_le_bytes(pair)
        }
    }
}

impl<R: Read> Read for Transcoder<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let mut written = 0;
        if self.pending_len > 0 {
            let n = self.pending_len.min(out.len());
            out[..n].copy_from_slice(&self.pending[self.pending_start..self.pending_start + n]);
            self.pending_start += n;
            self.pending_len -= n;
            written = n;
        }
        while written < out.len() {
            // ASCII runs of Windows-1252 (and UTF-8, which is passed through) are copied as
            // they are.
            if !matches!(self.encoding, Encoding::Utf16 { .. }) && self.fill(1)? > 0 {
                let room = out.len() - written;
                let utf8 = self.encoding == Encoding::Utf8;
                let run = self.raw[self.start..self.end]
                    .iter()
                    .take(room)
                    .take_while(|b| utf8 || b.is_ascii())
                    .count();
                if run > 0 {
                    out[written..written + run]
                        .copy_from_slice(&self.raw[self.start..self.start + run]);
                    self.start += run;
                    written += run;
                    continue;
                }
            }
            let mut char_bytes = [0u8; 4];
            let Some(n) = self.next_char(&mut char_bytes)? else {
                break;
            };
            let fits = n.min(out.len() - written);
            out[written..written + fits].copy_from_slice(&char_bytes[..fits]);
            written += fits;
            if fits < n {
                self.pending = char_bytes;
                self.pending_start = fits;
                self.pending_len = n - fits;
            }
        }
        Ok(written)
    }
}

/// The upload as the decoder reads it: as it is (UTF-8), or converted to UTF-8.
pub enum Source<R> {
    /// A UTF-8 file, read as it is.
    Utf8 {
        /// The upload.
        input: R,
        /// Bytes read from it so far.
        consumed: u64,
    },
    /// A file in another encoding, converted as it is read.
    Transcoded(Transcoder<R>),
}

impl<R: Read> Source<R> {
    /// Bytes of the upload read so far (before any conversion): what file-size limits count.
    pub fn consumed(&self) -> u64 {
        match self {
            Source::Utf8 { consumed, .. } => *consumed,
            Source::Transcoded(t) => t.consumed(),
        }
    }
}

impl<R: Read> Read for Source<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Source::Utf8 { input, consumed } => {
                let n = input.read(out)?;
                *consumed += n as u64;
                Ok(n)
            }
            Source::Transcoded(t) => t.read(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reads everything from `t` in reads of the sizes in `sizes` (cycled).
    fn read_all<R: Read>(mut t: R, sizes: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        for &size in sizes.iter().cycle() {
            let mut buf = vec![0u8; size.max(1)];
            let n = t.read(&mut buf).unwrap();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
        unreachable!()
    }

    /// A reader handing out its bytes `step` at a time.
    struct Trickle<'a> {
        bytes: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = self.step.min(out.len()).min(self.bytes.len());
            out[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    /// Converts `bytes` through a transcoder fed `head` bytes up front and the rest `step` at a
    /// time, read back in reads of `sizes`.
    fn transcode(
        encoding: Encoding,
        bytes: &[u8],
        head: usize,
        step: usize,
        sizes: &[usize],
    ) -> Vec<u8> {
        let head = head.min(bytes.len());
        let rest = Trickle {
            bytes: &bytes[head..],
            step: step.max(1),
        };
        let t = Transcoder::new(
            rest,
            encoding,
            bytes[..head].to_vec(),
            0,
            head == bytes.len(),
        );
        read_all(t, sizes)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn utf16_is_converted_as_the_standard_library_decodes_it(
            units in prop::collection::vec(prop_oneof![
                4 => 0x20u16..0x7F,
                2 => 0x80u16..0x800,
                1 => 0x800u16..0xD800,
                1 => 0xD800u16..0xE000,
                1 => 0xE000u16..=0xFFFF,
            ], 0..300),
            big_endian: bool,
            head in 0usize..700,
            step in 1usize..50,
            sizes in prop::collection::vec(1usize..40, 1..5),
        ) {
            let bytes: Vec<u8> = units
                .iter()
                .flat_map(|u| if big_endian { u.to_be_bytes() } else { u.to_le_bytes() })
                .collect();
            let got = transcode(Encoding::Utf16 { big_endian }, &bytes, head, step, &sizes);
            // The reference: std's decoder; an unpaired surrogate is kept as the three bytes
            // the transcoder writes for it.
            let mut want = Vec::new();
            for c in char::decode_utf16(units.iter().copied()) {
                match c {
                    Ok(c) => want.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                    Err(e) => {
                        let u = e.unpaired_surrogate();
                        want.extend_from_slice(&[0xED, 0x80 | ((u >> 6) & 0x3F) as u8, 0x80 | (u & 0x3F) as u8]);
                    }
                }
            }
            prop_assert_eq!(&got, &want);
            prop_assert_eq!(std::str::from_utf8(&got).is_ok(), String::from_utf16(&units).is_ok());
        }

        #[test]
        fn windows_1252_is_converted_as_encoding_rs_decodes_it(
            bytes in prop::collection::vec(any::<u8>(), 0..400),
            head in 0usize..500,
            step in 1usize..50,
            sizes in prop::collection::vec(1usize..40, 1..5),
        ) {
            let got = transcode(Encoding::Windows1252, &bytes, head, step, &sizes);
            let mut want = Vec::new();
            for &b in &bytes {
                if UNDEFINED_1252.contains(&b) {
                    want.push(b);
                } else {
                    let one = [b];
                    let (text, _) = encoding_rs::WINDOWS_1252.decode_without_bom_handling(&one);
                    want.extend_from_slice(text.as_bytes());
                }
            }
            prop_assert_eq!(&got, &want);
            prop_assert_eq!(
                std::str::from_utf8(&got).is_ok(),
                !bytes.iter().any(|b| UNDEFINED_1252.contains(b))
            );
        }
    }

    #[test]
    fn byte_order_marks_decide() {
        let d = detect(b"\xef\xbb\xbfType,Date\r\n", true);
        assert_eq!((d.encoding, d.bom), (Encoding::Utf8, 3));
        let d = detect(b"\xff\xfeT\0y\0", true);
        assert_eq!(
            (d.encoding, d.bom),
            (Encoding::Utf16 { big_endian: false }, 2)
        );
        let d = detect(b"\xfe\xff\0T\0y", true);
        assert_eq!(
            (d.encoding, d.bom),
            (Encoding::Utf16 { big_endian: true }, 2)
        );
    }

    #[test]
    fn utf16_without_a_mark_is_found_by_its_zero_bytes() {
        let text = "Type\tDate\r\nPerson search\t01/01/2020 10:00\r\n";
        let le: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let be: Vec<u8> = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
        assert_eq!(
            detect(&le, true).encoding,
            Encoding::Utf16 { big_endian: false }
        );
        assert_eq!(
            detect(&be, true).encoding,
            Encoding::Utf16 { big_endian: true }
        );
        // Binary data with scattered zeros is not UTF-16 (the decoder then finds it binary).
        let zip = b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00\x21\x00\xa3\x9f\x11\x7c";
        assert!(!matches!(
            detect(zip, true).encoding,
            Encoding::Utf16 { .. }
        ));
    }

    #[test]
    fn windows_1252_only_when_no_utf8_character_is_among_the_stray_bytes() {
        let ansi = b"Operation Caf\xe9,\x93quoted\x94\r\n";
        let d = detect(ansi, true);
        assert_eq!(d.encoding, Encoding::Windows1252);
        assert_eq!(d.example, Some(0xE9));
        let mixed = "Operation Môn,"
            .bytes()
            .chain(*b"Caf\xe9\n")
            .collect::<Vec<u8>>();
        let d = detect(&mixed, true);
        assert_eq!(
            (d.encoding, d.utf8_because),
            (Encoding::Utf8, Utf8Because::Mixed)
        );
        let undefined = b"Caf\xe9 \x81\n";
        assert_eq!(
            detect(undefined, true).utf8_because,
            Utf8Because::Undefined1252
        );
        assert_eq!(
            detect(b"plain,ascii\n", true).utf8_because,
            Utf8Because::Ascii
        );
        assert_eq!(
            detect("Môn\n".as_bytes(), true).utf8_because,
            Utf8Because::Valid
        );
    }

    #[test]
    fn a_character_cut_by_the_chunk_is_not_a_stray_byte() {
        let text = "Operation Môn".as_bytes();
        let cut = &text[..=text.iter().position(|&b| b == 0xC3).unwrap()];
        assert_eq!(detect(cut, false).encoding, Encoding::Utf8);
        // At the end of the file the lone byte is a stray one: `Ã` in Windows-1252.
        assert_eq!(detect(cut, true).encoding, Encoding::Windows1252);
    }

    #[test]
    fn what_could_not_be_converted_is_described() {
        let t = Transcoder::new(
            &b""[..],
            Encoding::Utf16 { big_endian: false },
            b"a\0\x3d\xd8,\0".to_vec(),
            0,
            true,
        );
        let out = read_all(t, &[100]);
        assert_eq!(out, b"a\xed\xa0\xbd,");
        let bad = &out[1..];
        assert_eq!(
            Encoding::Utf16 { big_endian: false }.describe_invalid(bad, Utf8Because::Valid),
            "U+D83D is half of a UTF-16 surrogate pair, without its other half"
        );
        assert!(
            Encoding::Utf8
                .describe_invalid(b"\xe9t\xe9", Utf8Because::Mixed)
                .starts_with("0xE9 is not UTF-8 (in Windows-1252 it is `é`)")
        );
    }
}

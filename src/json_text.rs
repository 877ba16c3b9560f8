//! JSON string escaping as serde_json escapes (`"`, `\\`, `\b` `\f` `\n` `\r` `\t`, other control
//! characters as `\u00XX`; nothing else), written straight into bytes. The answer's patch carries
//! the Multus annotation, itself JSON, as a JSON string: a quote every few bytes. serde_json
//! copies each run between escapes with its own write and looks at one byte at a time; here the
//! text is read eight bytes at a time and escaped through a block on the stack.

/// The escape of each byte: 0 for none, `u` for `\u00XX`, else the letter after the backslash.
static ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = b'u';
        i += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// The escape of a byte that a JSON string escapes (`ESCAPE` not 0): its bytes, padded to the
/// longest (`\u00XX`), and how many of them are the escape.
fn escape_of(c: u8) -> ([u8; 6], usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match ESCAPE[usize::from(c)] {
        b'u' => (
            [
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(c >> 4)],
                HEX[usize::from(c & 0xf)],
            ],
            6,
        ),
        e => ([b'\\', e, 0, 0, 0, 0], 2),
    }
}

/// Appends `s` as a JSON string, quotes included.
pub fn quoted_into(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    escape_into(out, s);
    out.push(b'"');
}

/// Appends the JSON string escape of `s` (no quotes).
pub fn escape_into(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    // Most strings (names, paths, uids) need no escape: one scan, one copy. Otherwise the
    // bytes before the first escape are copied as they are.
    let Some(first) = first_escaped(b) else {
        out.extend_from_slice(b);
        return;
    };
    // Written through a block on the stack (its index stays in a register), a block at a time
    // into `out`. Eight bytes are read at a time, and every byte among them to escape is found
    // at once ([`exact_escapes`]): the runs between them are written by storing the word
    // shifted past what is written already, each escape by storing its bytes.
    const BLOCK: usize = 256;
    let mut block = [0u8; BLOCK];
    let mut n = 0;
    out.reserve(b.len() + b.len() / 4 + 8);
    out.extend_from_slice(&b[..first]);
    let mut words = b[first..].chunks_exact(8);
    for w in &mut words {
        // Room for a word of escapes (8 × `\u00XX`) and the word shifted after the last.
        if n > BLOCK - 64 {
            out.extend_from_slice(&block[..n]);
            n = 0;
        }
        let x = u64::from_le_bytes(w.try_into().unwrap_or_default());
        let mut m = exact_escapes(x);
        // Bytes of the word written so far.
        let mut done = 0;
        while m != 0 {
            let k = (m.trailing_zeros() / 8) as usize;
            m &= m - 1;
            // The bytes from `done` up to `k` (and more, overwritten next).
            block[n..n + 8].copy_from_slice(&(x >> (8 * done)).to_le_bytes());
            n += k - done;
            match ESCAPE[usize::from(w[k])] {
                b'u' => {
                    let (e, len) = escape_of(w[k]);
                    block[n..n + 6].copy_from_slice(&e);
                    n += len;
                }
                e => {
                    block[n..n + 2].copy_from_slice(&[b'\\', e]);
                    n += 2;
                }
            }
            done = k + 1;
        }
        if done < 8 {
            block[n..n + 8].copy_from_slice(&(x >> (8 * done)).to_le_bytes());
            n += 8 - done;
        }
    }
    // The last bytes, one at a time.
    for &c in words.remainder() {
        if n > BLOCK - 8 {
            out.extend_from_slice(&block[..n]);
            n = 0;
        }
        if ESCAPE[usize::from(c)] == 0 {
            block[n] = c;
            n += 1;
        } else {
            let (e, len) = escape_of(c);
            block[n..n + 6].copy_from_slice(&e);
            n += len;
        }
    }
    out.extend_from_slice(&block[..n]);
}

/// Appends the JSON string escape of `s` (no quotes) to text: [`escape_into`] for a `String`
/// (the log line), runs between escapes copied whole (log values rarely hold any).
pub fn escape_str(out: &mut String, s: &str) {
    let mut rest = s;
    while let Some(k) = first_escaped(rest.as_bytes()) {
        // Every byte escaped is ASCII, so `k` and `k + 1` are character boundaries.
        out.push_str(&rest[..k]);
        let (e, len) = escape_of(rest.as_bytes()[k]);
        out.extend(e[..len].iter().map(|&b| char::from(b)));
        rest = &rest[k + 1..];
    }
    out.push_str(rest);
}

const ONES: u64 = u64::from_ne_bytes([1; 8]);
const HIGH: u64 = ONES << 7;

/// The high bit of each byte of `x` that is escaped (`"`, `\\`, below 0x20), and maybe of some
/// bytes above the first one: a byte is below `n` when subtracting `n` borrows into its high bit
/// while its own high bit is clear; equal to `c` when `x ^ c` is a zero byte. A borrow only
/// comes from a byte that matches, so the lowest flag is always exact.
fn escapes(x: u64) -> u64 {
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH;
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    below(x, 0x20) | zero(x ^ (ONES * u64::from(b'"'))) | zero(x ^ (ONES * u64::from(b'\\')))
}

/// The high bit of each byte of `x` that is escaped (`"`, `\\`, below 0x20), exactly: a byte is
/// zero when its low seven bits plus 0x7f do not reach its high bit and that bit is clear (no
/// carry leaves a byte); below 0x20 when its top three bits are zero.
fn exact_escapes(x: u64) -> u64 {
    const LOW: u64 = !HIGH;
    let nonzero = |y: u64| ((y & LOW) + LOW) | y;
    let below = nonzero(x & (ONES * 0xe0));
    let quote = nonzero(x ^ (ONES * u64::from(b'"')));
    let backslash = nonzero(x ^ (ONES * u64::from(b'\\')));
    !(below & quote & backslash) & HIGH
}

/// Where the first byte of `b` that a JSON string escapes is (`"`, `\\`, below 0x20), eight
/// bytes at a time ([`escapes`]): the end of a string's plain run, for the scanners.
pub fn first_escaped(b: &[u8]) -> Option<usize> {
    let mut words = b.chunks_exact(8);
    let mut at = 0;
    for w in &mut words {
        let m = escapes(u64::from_le_bytes(w.try_into().unwrap_or_default()));
        if m != 0 {
            return Some(at + (m.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    let tail = words.remainder().iter();
    tail.map(|&c| c < 0x20 || c == b'"' || c == b'\\')
        .position(|e| e)
        .map(|i| at + i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `s` quoted both ways (bytes and text), checked to agree.
    fn quoted(s: &str) -> String {
        let mut out = Vec::new();
        quoted_into(&mut out, s);
        let bytes = String::from_utf8(out).unwrap();
        let mut text = String::from("\"");
        escape_str(&mut text, s);
        text.push('"');
        assert_eq!(bytes, text, "{s:?}");
        bytes
    }

    #[test]
    fn every_character_below_0x80_is_escaped_as_serde_json_escapes_it() {
        for c in (0u8..0x80).map(char::from) {
            let s = format!("a{c}b{c}");
            assert_eq!(quoted(&s), serde_json::to_string(&s).unwrap(), "{c:?}");
        }
        assert_eq!(quoted(""), "\"\"");
        assert_eq!(
            quoted(r#"[{"name":"a\b","mac":"02:00:00:00:00:01"}]"#),
            r#""[{\"name\":\"a\\b\",\"mac\":\"02:00:00:00:00:01\"}]""#
        );
    }

    #[test]
    fn every_character_at_every_place_of_words_and_tails_is_escaped_as_serde_json_does() {
        let chars = (0u8..0x80).map(char::from).chain(['é', '✓', '\u{10348}']);
        for c in chars {
            for len in 1..=20 {
                for at in 0..len {
                    for filler in ['a', '"', '\u{1}', 'é'] {
                        let s: String =
                            (0..len).map(|i| if i == at { c } else { filler }).collect();
                        assert_eq!(quoted(&s), serde_json::to_string(&s).unwrap(), "{s:?}");
                    }
                }
            }
        }
        // Longer than a block, with escapes of every length across its edges.
        let long: String = "ab\"\u{1f}\\é\n".repeat(100);
        assert_eq!(quoted(&long), serde_json::to_string(&long).unwrap());
        let controls: String = "\u{1}".repeat(300);
        assert_eq!(quoted(&controls), serde_json::to_string(&controls).unwrap());
        // Each escape, alone or in a run, at every offset around where the block is written out
        // (past 192 of its 256 bytes): a word of the longest escapes must still fit.
        for lead in 1..=8 {
            for pad in 170..=280 {
                for c in ['"', '\\', '\n', '\u{1}'] {
                    for run in [1, 2, 7, 9] {
                        // Escapes first, so that the block is in use from the start, each
                        // moving the block's index one byte further from the input's.
                        let s = format!(
                            "{}{}{}{}",
                            "\"".repeat(lead),
                            "a".repeat(pad),
                            String::from(c).repeat(run),
                            "b".repeat(9)
                        );
                        assert_eq!(
                            quoted(&s),
                            serde_json::to_string(&s).unwrap(),
                            "{lead} {pad} {c:?} {run}"
                        );
                    }
                }
            }
        }
    }

    proptest! {
        #[test]
        fn any_string_is_escaped_as_serde_json_escapes_it(s in any::<String>()) {
            prop_assert_eq!(quoted(&s), serde_json::to_string(&s).unwrap());
        }

        #[test]
        fn json_text_is_escaped_as_serde_json_escapes_it(v in "[\\[\\]{}\":,a-z0-9\\\\ \n\té]{0,200}") {
            prop_assert_eq!(quoted(&v), serde_json::to_string(&v).unwrap());
        }
    }

    #[test]
    fn first_escaped_is_exactly_the_first_byte_that_is_escaped() {
        let first = |b: &[u8]| b.iter().position(|&c| c < 0x20 || c == b'"' || c == b'\\');
        // The first of several, wherever they are.
        for len in 0..=20 {
            for at in 0..len {
                for also in at..len {
                    for (c, d) in [(b'"', b'\\'), (b'\\', 0x1f), (0, b'"'), (b'"', b'"')] {
                        let mut b = vec![b'a'; len];
                        b[also] = d;
                        b[at] = c;
                        assert_eq!(first_escaped(&b), first(&b), "{b:?}");
                    }
                }
            }
        }
        // Every byte value at every position of words and tails, among bytes that need none.
        for len in 1..=17 {
            for at in 0..len {
                for c in 0..=255u8 {
                    let mut b = vec![b'a'; len];
                    b[at] = c;
                    assert_eq!(first_escaped(&b), first(&b), "{b:?}");
                    b.iter_mut().for_each(|x| *x = 0xff);
                    b[at] = c;
                    assert_eq!(first_escaped(&b), first(&b), "{b:?}");
                }
            }
        }
        assert_eq!(first_escaped(b""), None);
    }
}

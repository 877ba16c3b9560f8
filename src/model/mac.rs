//! MAC addresses: parsing, normalising and classifying.

use std::fmt;
use std::str::FromStr;

/// A 48-bit IEEE 802 MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac([u8; 6]);

/// Why a string is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a MAC address; write six hex pairs such as \"02:a1:b2:c3:d4:e5\"")]
pub struct MacParseError(pub String);

impl Mac {
    /// The broadcast address `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: Mac = Mac([0xff; 6]);
    /// The all-zero address.
    pub const ZERO: Mac = Mac([0; 6]);
    /// `02:00:00:00:00:00`, which KubeVirt's masquerade binding reserves for itself.
    pub const MASQUERADE: Mac = Mac([0x02, 0, 0, 0, 0, 0]);

    /// Builds a MAC from its six octets.
    pub const fn new(octets: [u8; 6]) -> Self {
        Mac(octets)
    }

    /// The six octets.
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// The address as a 48-bit integer (first octet most significant).
    pub fn to_u64(self) -> u64 {
        self.0
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
    }

    /// The address whose 48-bit integer is `v` (upper 16 bits ignored).
    pub fn from_u64(v: u64) -> Self {
        let b = v.to_be_bytes();
        Mac([b[2], b[3], b[4], b[5], b[6], b[7]])
    }

    /// Group (multicast or broadcast) address: bit 0 of the first octet set.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// Locally administered: bit 1 of the first octet set.
    pub fn is_local(&self) -> bool {
        self.0[0] & 0x02 != 0
    }

    /// A unicast address that is neither all-zero nor broadcast.
    pub fn is_usable_unicast(&self) -> bool {
        !self.is_multicast() && *self != Mac::ZERO
    }
}

impl FromStr for Mac {
    type Err = MacParseError;

    /// Accepts `aa:bb:cc:dd:ee:ff` and `aa-bb-cc-dd-ee-ff`, any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        /// A hex digit's value.
        fn nibble(c: u8) -> Option<u8> {
            match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                b'A'..=b'F' => Some(c - b'A' + 10),
                _ => None,
            }
        }
        let bytes = s.as_bytes();
        let parsed = (|| {
            if bytes.len() != 17 {
                return None;
            }
            let sep = bytes[2];
            if sep != b':' && sep != b'-' {
                return None;
            }
            let mut out = [0u8; 6];
            for (i, octet) in out.iter_mut().enumerate() {
                let at = i * 3;
                if i > 0 && bytes[at - 1] != sep {
                    return None;
                }
                *octet = nibble(bytes[at])? << 4 | nibble(bytes[at + 1])?;
            }
            Some(Mac(out))
        })();
        parsed.ok_or_else(|| MacParseError(s.to_string()))
    }
}

/// A MAC's canonical text, `02:aa:bb:cc:dd:0f`, on the stack ([`Mac::text`]).
#[derive(Clone, Copy)]
pub struct MacText([u8; 17]);

impl MacText {
    /// The text.
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits and ':' are ever written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl Mac {
    /// The canonical text (lower-case hex pairs joined by `:`), without allocating.
    pub fn text(&self) -> MacText {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [b':'; 17];
        for (i, b) in self.0.iter().enumerate() {
            out[i * 3] = HEX[usize::from(b >> 4)];
            out[i * 3 + 1] = HEX[usize::from(b & 0x0f)];
        }
        MacText(out)
    }
}

impl fmt::Display for Mac {
    /// Lower-case, colon-separated: the normal form hotnic writes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text().as_str())
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mac({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_separators_and_normalises() {
        let a: Mac = "02:AA:bb:CC:dd:0F".parse().unwrap();
        let b: Mac = "02-aa-BB-cc-DD-0f".parse().unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "02:aa:bb:cc:dd:0f");
        assert_eq!(Mac::BROADCAST.text().as_str(), "ff:ff:ff:ff:ff:ff");
        assert_eq!(
            Mac::from_u64(0x0a1b_2c3d_4e5f).to_string(),
            "0a:1b:2c:3d:4e:5f"
        );
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "02:aa:bb:cc:dd",
            "02:aa:bb:cc:dd:ee:ff",
            "02:aa-bb:cc:dd:ee",
            "0g:aa:bb:cc:dd:ee",
            "02aabbccddee",
            "02:aa:bb:cc:dd:e",
            " 2:aa:bb:cc:dd:ee",
            "+2:aa:bb:cc:dd:ee",
            "02:aa:bb:cc:dd:é",
            "02:aa:bb:cc:dd:-1",
            "02:aa:bb:cc:dd: e",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad:?} parsed");
        }
    }

    proptest::proptest! {
        /// Any 17-character text over the digits, separators and their neighbours: parsed
        /// exactly when it is six two-digit hex octets under one separator, to those octets.
        #[test]
        fn parses_exactly_the_hex_octets(s in proptest::prop_oneof![
            "[0-9a-gA-G:/@`-]{17}",
            // Mostly well-formed: a stray `g` or mixed separators now and then.
            "[0-9a-fA-Fg]{2}([:-][0-9a-fA-Fg]{2}){5}",
            "[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}",
        ]) {
            let octets: Vec<&str> = s.split(&s[2..3]).collect();
            let want = (matches!(&s[2..3], ":" | "-")
                && octets.len() == 6
                && octets.iter().all(|o| o.len() == 2 && o.bytes().all(|c| c.is_ascii_hexdigit())))
            .then(|| {
                let mut m = [0u8; 6];
                for (b, o) in m.iter_mut().zip(&octets) {
                    *b = u8::from_str_radix(o, 16).unwrap();
                }
                Mac(m)
            });
            proptest::prop_assert_eq!(s.parse::<Mac>().ok(), want, "{}", s);
        }
    }

    #[test]
    fn classifies() {
        let m: Mac = "03:00:00:00:00:01".parse().unwrap();
        assert!(m.is_multicast());
        assert!(!Mac::BROADCAST.is_usable_unicast());
        assert!(!Mac::ZERO.is_usable_unicast());
        let l: Mac = "02:00:00:00:00:01".parse().unwrap();
        assert!(l.is_local() && l.is_usable_unicast());
        assert_eq!(Mac::from_u64(l.to_u64()), l);
    }
}

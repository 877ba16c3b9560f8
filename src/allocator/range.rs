//! The MAC range hotnic allocates from.

use crate::model::Mac;
use std::fmt;
use std::str::FromStr;

/// An inclusive range of MACs; only its locally administered unicast members are handed out.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MacRange {
    start: Mac,
    end: Mac,
}

/// Why a range is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// Not of the form `START-END`.
    #[error("{0:?} is not a MAC range; write START-END, e.g. 02:00:00:00:00:00-02:ff:ff:ff:ff:ff")]
    Syntax(String),
    /// START after END.
    #[error("MAC range {0}: start is after end")]
    Reversed(String),
    /// No locally administered unicast address inside.
    #[error(
        "MAC range {0} holds no locally administered unicast address (first octet with bit 1 set and bit 0 clear, e.g. 02)"
    )]
    NoUsable(String),
}

impl MacRange {
    /// KubeMacPool's default: `02:00:00:00:00:00`–`02:ff:ff:ff:ff:ff`.
    pub fn default_range() -> Self {
        MacRange {
            start: Mac::new([0x02, 0, 0, 0, 0, 0]),
            end: Mac::new([0x02, 0xff, 0xff, 0xff, 0xff, 0xff]),
        }
    }

    /// A range from `start` to `end`, inclusive.
    pub fn new(start: Mac, end: Mac) -> Result<Self, RangeError> {
        let text = format!("{start}-{end}");
        if start > end {
            return Err(RangeError::Reversed(text));
        }
        let r = MacRange { start, end };
        if r.next_usable(start.to_u64()).is_none() {
            return Err(RangeError::NoUsable(text));
        }
        Ok(r)
    }

    /// First address.
    pub fn start(&self) -> Mac {
        self.start
    }

    /// Last address.
    pub fn end(&self) -> Mac {
        self.end
    }

    /// Whether `mac` lies in the range.
    pub fn contains(&self, mac: Mac) -> bool {
        self.start <= mac && mac <= self.end
    }

    /// Number of addresses (usable or not).
    pub fn len(&self) -> u64 {
        self.end.to_u64() - self.start.to_u64() + 1
    }

    /// Always false: a range holds at least one address.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The first usable address (locally administered unicast, not `02:00:00:00:00:00`) at or
    /// after `from` and inside the range.
    pub fn next_usable(&self, from: u64) -> Option<u64> {
        let end = self.end.to_u64();
        let mut v = from.max(self.start.to_u64());
        while v <= end {
            let first = (v >> 40) as u8;
            if first & 0x03 != 0x02 {
                // Jump to the next first octet of the form xxxxxx10.
                let base = u64::from(first & !0x03);
                let next_first = if base + 2 > u64::from(first) {
                    base + 2
                } else {
                    base + 6
                };
                if next_first > 0xff {
                    return None;
                }
                v = next_first << 40;
                continue;
            }
            if Mac::from_u64(v) == Mac::MASQUERADE {
                v += 1;
                continue;
            }
            return Some(v);
        }
        None
    }
}

impl MacRange {
    /// How many usable addresses the range holds (locally administered unicast, not
    /// `02:00:00:00:00:00`).
    pub fn usable_len(&self) -> u64 {
        let (start, end) = (self.start.to_u64(), self.end.to_u64());
        let mut n = 0;
        for first in (start >> 40)..=(end >> 40) {
            if first & 0x03 != 0x02 {
                continue;
            }
            let lo = start.max(first << 40);
            let hi = end.min((first << 40) | 0xff_ffff_ffff);
            n += hi - lo + 1;
        }
        if self.contains(Mac::MASQUERADE) {
            n -= 1;
        }
        n
    }

    /// Next-fit: the first usable address at or after `cursor` that `taken` does not reject,
    /// going round to the start of the range once. `None`: every usable address is taken.
    /// Visits each address at most once.
    pub fn next_fit(&self, cursor: u64, taken: impl Fn(u64) -> bool) -> Option<u64> {
        let cursor = cursor.clamp(self.start.to_u64(), self.end.to_u64());
        let mut candidate = cursor;
        let mut wrapped = false;
        loop {
            match self.next_usable(candidate) {
                Some(v) if wrapped && v >= cursor => return None,
                Some(v) if !taken(v) => return Some(v),
                Some(v) => candidate = v + 1,
                None if wrapped => return None,
                None => {
                    wrapped = true;
                    candidate = self.start.to_u64();
                }
            }
        }
    }
}

impl FromStr for MacRange {
    type Err = RangeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, b) = s
            .split_once('-')
            .filter(|(a, _)| a.len() == 17)
            .or_else(|| {
                s.get(..17)
                    .zip(s.get(18..))
                    .filter(|_| s.as_bytes().get(17) == Some(&b'-'))
            })
            .ok_or_else(|| RangeError::Syntax(s.to_string()))?;
        let start: Mac = a
            .trim()
            .parse()
            .map_err(|_| RangeError::Syntax(s.to_string()))?;
        let end: Mac = b
            .trim()
            .parse()
            .map_err(|_| RangeError::Syntax(s.to_string()))?;
        MacRange::new(start, end)
    }
}

impl fmt::Display for MacRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_skips_unusable() {
        let r: MacRange = "02:00:00:00:00:00-02:ff:ff:ff:ff:ff".parse().unwrap();
        assert_eq!(r, MacRange::default_range());
        // 02:00:00:00:00:00 is reserved for KubeVirt masquerade.
        assert_eq!(r.next_usable(0), Some(0x0200_0000_0001));
        let wide: MacRange = "00:00:00:00:00:00-06:00:00:00:00:05".parse().unwrap();
        assert_eq!(wide.next_usable(0x0300_0000_0000), Some(0x0600_0000_0000));
        assert!(
            "00:00:00:00:00:00-01:ff:ff:ff:ff:ff"
                .parse::<MacRange>()
                .is_err()
        );
        assert!(
            "02:00:00:00:00:09-02:00:00:00:00:01"
                .parse::<MacRange>()
                .is_err()
        );
        assert!("nonsense".parse::<MacRange>().is_err());
    }

    #[test]
    fn usable_len_counts_locally_administered_unicast_only() {
        assert_eq!(MacRange::default_range().usable_len(), (1 << 40) - 1);
        let small: MacRange = "02:00:00:00:00:01-02:00:00:00:00:10".parse().unwrap();
        assert_eq!(small.usable_len(), 16);
        let wide: MacRange = "00:00:00:00:00:00-06:00:00:00:00:05".parse().unwrap();
        assert_eq!(wide.usable_len(), (1 << 40) - 1 + 6);
    }

    #[test]
    fn next_fit_wraps_once_and_reports_exhaustion() {
        let r: MacRange = "02:00:00:00:00:01-02:00:00:00:00:04".parse().unwrap();
        assert_eq!(
            r.next_fit(0x0200_0000_0003, |_| false),
            Some(0x0200_0000_0003)
        );
        assert_eq!(
            r.next_fit(0x0200_0000_0003, |v| v >= 0x0200_0000_0003),
            Some(0x0200_0000_0001)
        );
        assert_eq!(r.next_fit(0x0200_0000_0002, |_| true), None);
        // A cursor outside the range is clamped into it.
        assert_eq!(r.next_fit(u64::MAX, |_| false), Some(0x0200_0000_0004));
    }

    #[test]
    fn dash_separated_macs_need_the_middle_dash() {
        let r: MacRange = "0a-00-00-00-00-00-0a-00-00-00-00-ff".parse().unwrap();
        assert_eq!(r.start().to_string(), "0a:00:00:00:00:00");
        assert_eq!(r.len(), 256);
    }
}

//! Field paths (`spec.nics[1].portId`), kept in parts and rendered only when shown: every NIC
//! of every review carries several, and only a denial or a finding ever shows one.

use std::borrow::Cow;
use std::fmt;

/// A field path: `{base}`, then `[{index}]` for an element of a list, then `.{member}`. The
/// fixed parts are `&'static str`, so building one for a NIC allocates nothing; it is written
/// out by [`Display`](fmt::Display) (or `String::from`) when it is shown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldPath {
    base: Cow<'static, str>,
    index: Option<usize>,
    member: Cow<'static, str>,
}

impl FieldPath {
    /// A path as written, e.g. `metadata.annotations[hotnic.io/mac-addresses]`.
    pub fn new(base: impl Into<Cow<'static, str>>) -> Self {
        FieldPath {
            base: base.into(),
            index: None,
            member: Cow::Borrowed(""),
        }
    }

    /// Element `index` of the list at `base`, e.g. `spec.nics[1]`.
    pub fn element(base: impl Into<Cow<'static, str>>, index: usize) -> Self {
        FieldPath {
            base: base.into(),
            index: Some(index),
            member: Cow::Borrowed(""),
        }
    }

    /// This path's member `name`, e.g. `spec.nics[1]` → `spec.nics[1].portId`.
    pub fn member(&self, name: impl Into<Cow<'static, str>>) -> Self {
        let name = name.into();
        if self.member.is_empty() {
            FieldPath {
                base: self.base.clone(),
                index: self.index,
                member: name,
            }
        } else {
            // A member of a member: rare (not on any NIC), so written out.
            FieldPath::new(format!("{self}.{name}"))
        }
    }

    /// The list this path is an element of (`spec.nics` for `spec.nics[1]`), if it is one.
    pub fn list(&self) -> Option<&str> {
        (self.index.is_some() && self.member.is_empty()).then_some(&*self.base)
    }

    /// Whether this is the empty path (a NIC that is written nowhere has no MAC path).
    pub fn is_empty(&self) -> bool {
        self.base.is_empty() && self.index.is_none() && self.member.is_empty()
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base)?;
        if let Some(i) = self.index {
            write!(f, "[{i}]")?;
        }
        if !self.member.is_empty() {
            f.write_str(".")?;
            f.write_str(&self.member)?;
        }
        Ok(())
    }
}

impl From<&FieldPath> for String {
    fn from(p: &FieldPath) -> String {
        p.to_string()
    }
}

impl From<FieldPath> for String {
    fn from(p: FieldPath) -> String {
        p.to_string()
    }
}

impl PartialEq<str> for FieldPath {
    /// Whether the path, written out, is `other` (compared as it is written, no `String`).
    fn eq(&self, other: &str) -> bool {
        /// Consumes the expected text as the path is written; fails at the first difference.
        struct Rest<'a>(&'a str);
        impl fmt::Write for Rest<'_> {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                self.0 = self.0.strip_prefix(s).ok_or(fmt::Error)?;
                Ok(())
            }
        }
        let mut rest = Rest(other);
        fmt::write(&mut rest, format_args!("{self}")).is_ok() && rest.0.is_empty()
    }
}

impl PartialEq<&str> for FieldPath {
    fn eq(&self, other: &&str) -> bool {
        self == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_compares_as_written() {
        let nic = FieldPath::element("spec.nics", 12);
        let cases = [
            (FieldPath::new("metadata"), "metadata"),
            (nic.clone(), "spec.nics[12]"),
            (nic.member("portId"), "spec.nics[12].portId"),
            (nic.member("a").member("b"), "spec.nics[12].a.b"),
            (
                FieldPath::new("metadata.annotations[hotnic.io/mac-addresses]")
                    .member(String::from("eth1")),
                "metadata.annotations[hotnic.io/mac-addresses].eth1",
            ),
            (FieldPath::default(), ""),
        ];
        for (path, text) in cases {
            assert_eq!(path.to_string(), text);
            assert_eq!(String::from(&path), text);
            assert_eq!(path, text);
        }
        for other in ["spec.nics[13]", "spec.nics[12].", "spec.nics"] {
            assert_ne!(nic, other);
        }
        assert_ne!(nic.member("portId"), "spec.nics[12].portID");
        assert_eq!(nic.list(), Some("spec.nics"));
        assert_eq!(nic.member("name").list(), None);
        assert!(FieldPath::default().is_empty() && !nic.is_empty());
    }
}

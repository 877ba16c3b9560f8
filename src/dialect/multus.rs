//! Multus pods: the `k8s.v1.cni.cncf.io/networks` annotation (JSON list or short form).

use super::annotations::{self, NETWORKS, PatchBuilder};
use crate::json_text::first_escaped;
use crate::model::{
    BindingField, Dialect, ElementEnd, Fact, Field, FieldPath, Finding, Mac, NetworkRef, Nic,
    ShortForm, Syntax, TextSites, Workload,
};
use serde_json::{Map, Value};
use std::borrow::Cow;

/// The annotation's elements, each as a JSON object (short-form entries converted).
#[derive(Debug, Default)]
pub struct Elements {
    /// The elements, in order.
    pub items: Vec<Value>,
    /// Whether the annotation used the short comma form.
    pub short_form: bool,
    /// Syntax errors that make the annotation (or an element) unreadable.
    pub problems: Vec<Finding>,
}

/// Parses the annotation value (a JSON list, or `net`, `ns/net`, `ns/net@ifname` separated by commas).
pub fn parse_elements(raw: &Value) -> Elements {
    let base = annotations::NETWORKS_PATH;
    let mut out = Elements::default();
    let Some(text) = raw.as_str() else {
        out.problems.push(Finding::new(
            base,
            Syntax::AnnotationNotAString(raw.clone()),
        ));
        return out;
    };
    let text = text.trim();
    if text.is_empty() {
        return out;
    }
    if text.starts_with('[') {
        match serde_json::from_str::<Vec<Value>>(text) {
            Ok(items) => {
                for (i, item) in items.iter().enumerate() {
                    if !item.is_object() {
                        out.problems.push(Finding::new(
                            FieldPath::element(base, i),
                            Syntax::NotAnObject,
                        ));
                    }
                }
                out.items = items;
            }
            Err(e) => out
                .problems
                .push(Finding::new(base, Syntax::NotJson(e.to_string()))),
        }
        return out;
    }
    out.short_form = true;
    for (i, entry) in text.split(',').enumerate() {
        let entry = entry.trim();
        match parse_short(entry) {
            Ok(v) => out.items.push(v),
            Err(problem) => {
                let entry = entry.to_string();
                out.problems.push(Finding::new(
                    FieldPath::element(base, i),
                    Syntax::ShortForm { entry, problem },
                ));
                out.items.push(Value::Object(Map::new()));
            }
        }
    }
    out
}

/// One short-form entry: `net`, `ns/net`, `net@ifname` or `ns/net@ifname`.
fn parse_short(entry: &str) -> Result<Value, ShortForm> {
    if entry.is_empty() {
        return Err(ShortForm::Empty);
    }
    let (net, ifname) = match entry.split_once('@') {
        Some((n, i)) if !i.contains('@') => (n, Some(i)),
        Some(_) => return Err(ShortForm::TwoAts),
        None => (entry, None),
    };
    let (ns, name) = match net.split_once('/') {
        Some((ns, n)) if !n.contains('/') => (Some(ns), n),
        Some(_) => return Err(ShortForm::TwoSlashes),
        None => (None, net),
    };
    if name.is_empty() || ns.is_some_and(str::is_empty) || ifname.is_some_and(str::is_empty) {
        return Err(ShortForm::EmptyPart);
    }
    let mut m = Map::new();
    m.insert("name".into(), Value::String(name.into()));
    if let Some(ns) = ns {
        m.insert("namespace".into(), Value::String(ns.into()));
    }
    if let Some(i) = ifname {
        m.insert("interface".into(), Value::String(i.into()));
    }
    Ok(Value::Object(m))
}

/// A member the reader takes as text, as sent: a string (borrowed from the annotation when it
/// holds no escape), `null`, or any other value (kept for the finding that names it).
#[derive(Debug, PartialEq)]
enum Member<'a> {
    Text(Cow<'a, str>),
    Null,
    Other(Box<Value>),
}

impl Member<'_> {
    /// A member of a decoded element (the slow path): owned.
    fn of(v: &Value) -> Member<'static> {
        match v {
            Value::String(s) => Member::Text(Cow::Owned(s.clone())),
            Value::Null => Member::Null,
            other => Member::Other(Box::new(other.clone())),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Member<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Member<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Member<'de>, E> {
                Ok(Member::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Member<'de>, E> {
                Ok(Member::Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Member<'de>, E> {
                Ok(Member::Text(Cow::Owned(v)))
            }
            fn visit_unit<E>(self) -> Result<Member<'de>, E> {
                Ok(Member::Null)
            }
            fn visit_none<E>(self) -> Result<Member<'de>, E> {
                Ok(Member::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Member<'de>, E> {
                Ok(Member::Other(Box::new(Value::Bool(v))))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Member<'de>, E> {
                Ok(Member::Other(Box::new(Value::from(v))))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Member<'de>, E> {
                Ok(Member::Other(Box::new(Value::from(v))))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Member<'de>, E> {
                Ok(Member::Other(Box::new(Value::from(v))))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> Result<Member<'de>, A::Error> {
                let v = serde::Deserialize::deserialize(SeqAccessDeserializer::new(seq))?;
                Ok(Member::Other(Box::new(v)))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Member<'de>, A::Error> {
                let v = serde::Deserialize::deserialize(MapAccessDeserializer::new(map))?;
                Ok(Member::Other(Box::new(v)))
            }
        }
        d.deserialize_any(V)
    }
}

/// What the reader needs of one element: each member it reads, as sent (`None`: absent; with
/// a member given twice, the last one, as in a JSON object).
#[derive(Debug, Default, PartialEq)]
struct Element<'a> {
    name: Option<Member<'a>>,
    namespace: Option<Member<'a>>,
    interface: Option<Member<'a>>,
    mac: Option<Member<'a>>,
    ips: Option<Value>,
    claim_ref: bool,
    default_route: Option<Value>,
}

impl Element<'static> {
    fn from_map(m: &Map<String, Value>) -> Self {
        let get = |k: &str| super::view::in_map(m, k);
        Element {
            name: get("name").map(Member::of),
            namespace: get("namespace").map(Member::of),
            interface: get("interface").map(Member::of),
            mac: get("mac").map(Member::of),
            ips: get("ips").cloned(),
            claim_ref: get("ipam-claim-reference").is_some(),
            default_route: get("default-route").cloned(),
        }
    }
}

/// An element that is a JSON object, read member by member (no map built); anything else is
/// `None`.
struct MaybeElement<'a>(Option<Element<'a>>);

impl<'de> serde::Deserialize<'de> for MaybeElement<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = MaybeElement<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<MaybeElement<'de>, A::Error> {
                let mut el = Element::default();
                // Names read as strings, checked as `Value` checks them (a control character
                // or a lone surrogate escape is an error), so that this path and the `Value`
                // one agree on what is JSON; borrowed, so a name with an escape (rare) fails
                // this path and the annotation is read the slow way.
                while let Some(key) = map.next_key::<&str>()? {
                    let slot = match key {
                        "name" => &mut el.name,
                        "namespace" => &mut el.namespace,
                        "interface" => &mut el.interface,
                        "mac" => &mut el.mac,
                        "ips" => {
                            el.ips = Some(map.next_value()?);
                            continue;
                        }
                        "default-route" => {
                            el.default_route = Some(map.next_value()?);
                            continue;
                        }
                        other => {
                            el.claim_ref |= other == "ipam-claim-reference";
                            // Decoded (and dropped) as `Value` is, so that what it rejects
                            // (a number out of range) is rejected here too.
                            map.next_value::<Value>()?;
                            continue;
                        }
                    };
                    *slot = Some(map.next_value()?);
                }
                Ok(MaybeElement(Some(el)))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<MaybeElement<'de>, A::Error> {
                while seq.next_element::<Value>()?.is_some() {}
                Ok(MaybeElement(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<MaybeElement<'de>, E> {
                Ok(MaybeElement(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<MaybeElement<'de>, E> {
                Ok(MaybeElement(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<MaybeElement<'de>, E> {
                Ok(MaybeElement(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<MaybeElement<'de>, E> {
                Ok(MaybeElement(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<MaybeElement<'de>, E> {
                Ok(MaybeElement(None))
            }
            fn visit_unit<E>(self) -> Result<MaybeElement<'de>, E> {
                Ok(MaybeElement(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// The annotation's elements as the reader needs them (`None`: not an object), with the same
/// problems [`parse_elements`] finds. The plain form is read by [`plain_elements`], other JSON
/// is decoded straight into [`Element`]s; the short form, and any JSON these cannot take, go
/// through [`parse_elements`].
#[cfg(test)]
fn read_elements(raw: &Value) -> (Vec<Option<Element<'_>>>, Vec<Finding>) {
    let (items, problems, _) = read_sited(raw);
    (items, problems)
}

/// [`read_elements`], with where the elements end in the annotation's text when it is in the
/// plain form (what [`write_macs`] splices at).
fn read_sited(raw: &Value) -> (Vec<Option<Element<'_>>>, Vec<Finding>, Option<TextSites>) {
    let whole = raw.as_str();
    let text = whole.map(str::trim);
    if let (Some(whole), Some(text)) = (whole, text)
        && let Some((items, mut ends)) = plain_elements(text)
    {
        // Offsets in the trimmed text, made offsets in the whole.
        let skipped = text.as_ptr() as usize - whole.as_ptr() as usize;
        for end in &mut ends {
            end.close += skipped;
        }
        return (items, Vec::new(), Some(TextSites::new(whole, ends)));
    }
    if let Some(text) = text
        && text.starts_with('[')
        && let Ok(items) = serde_json::from_str::<Vec<MaybeElement>>(text)
    {
        let problems = items
            .iter()
            .enumerate()
            .filter(|(_, e)| e.0.is_none())
            .map(|(i, _)| {
                let path = FieldPath::element(annotations::NETWORKS_PATH, i);
                Finding::new(path, Syntax::NotAnObject)
            })
            .collect();
        return (items.into_iter().map(|e| e.0).collect(), problems, None);
    }
    let (items, problems) = slow_elements(raw);
    (items, problems, None)
}

/// The annotation in its plain form, read without serde: a JSON list of objects whose members
/// are all strings without escapes or control characters, the form Multus users and tools
/// write. `None` for anything else, which serde reads; what this takes, serde reads the same
/// (tested). With the elements, how each ends in `text` ([`ElementEnd`]).
fn plain_elements(text: &str) -> Option<(Vec<Option<Element<'_>>>, Vec<ElementEnd>)> {
    let b = text.as_bytes();
    let mut i = 0;
    // JSON's whitespace (not `is_ascii_whitespace`, which takes form feeds too).
    let ws = |i: &mut usize| {
        while matches!(b.get(*i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            *i += 1;
        }
    };
    // Whether the quote at `q` is followed by `: ` (an element's `"key": value` style).
    let spaced = |q: usize| b.get(q + 1..q + 3) == Some(b": ");
    // A string with neither escape nor control character: its text, `i` past it; `style` set
    // when one of its quotes is followed by `: `.
    let string = |i: &mut usize, style: &mut bool| -> Option<&str> {
        let start = i.checked_add(1).filter(|_| b.get(*i) == Some(&b'"'))?;
        let end = start + first_escaped(b.get(start..)?)?;
        (b[end] == b'"').then_some(())?;
        *style |= spaced(start - 1) || spaced(end);
        *i = end + 1;
        // Both ends are next to an ASCII quote: character boundaries.
        text.get(start..end)
    };
    ws(&mut i);
    (b.get(i) == Some(&b'[')).then_some(())?;
    i += 1;
    ws(&mut i);
    let mut out = Vec::new();
    let mut ends = Vec::new();
    if b.get(i) == Some(&b']') {
        i += 1;
    } else {
        loop {
            (b.get(i) == Some(&b'{')).then_some(())?;
            i += 1;
            ws(&mut i);
            let mut el = Element::default();
            let empty = b.get(i) == Some(&b'}');
            let (mut style, mut has_mac) = (false, false);
            if !empty {
                loop {
                    let key = string(&mut i, &mut style)?;
                    ws(&mut i);
                    (b.get(i) == Some(&b':')).then_some(())?;
                    i += 1;
                    ws(&mut i);
                    let value = string(&mut i, &mut style)?;
                    has_mac |= key == "mac" || value == "mac";
                    let text = || Some(Member::Text(Cow::Borrowed(value)));
                    match key {
                        "name" => el.name = text(),
                        "namespace" => el.namespace = text(),
                        "interface" => el.interface = text(),
                        "mac" => el.mac = text(),
                        "ips" => el.ips = Some(Value::String(value.to_owned())),
                        "default-route" => el.default_route = Some(Value::String(value.to_owned())),
                        "ipam-claim-reference" => el.claim_ref = true,
                        _ => {}
                    }
                    ws(&mut i);
                    match b.get(i)? {
                        b',' => {
                            i += 1;
                            ws(&mut i);
                        }
                        b'}' => break,
                        _ => return None,
                    }
                }
            }
            ends.push(ElementEnd {
                close: i,
                empty,
                spaced: style,
                has_mac,
            });
            i += 1;
            out.push(Some(el));
            ws(&mut i);
            match b.get(i)? {
                b',' => {
                    i += 1;
                    ws(&mut i);
                }
                b']' => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    ws(&mut i);
    (i == b.len()).then_some((out, ends))
}

/// [`read_elements`] through [`parse_elements`].
fn slow_elements(raw: &Value) -> (Vec<Option<Element<'static>>>, Vec<Finding>) {
    let parsed = parse_elements(raw);
    let items = parsed
        .items
        .iter()
        .map(|v| v.as_object().map(Element::from_map))
        .collect();
    (items, parsed.problems)
}

/// A string member as the reader takes it: absent or `null` is `None`; any other non-string is
/// a syntax finding at `{path}.{key}` and read as `None`.
fn text<'a>(
    v: Option<Member<'a>>,
    key: &'static str,
    path: &FieldPath,
    findings: &mut Vec<Finding>,
) -> Option<Cow<'a, str>> {
    match v? {
        Member::Null => None,
        Member::Text(s) => Some(s),
        Member::Other(other) => {
            findings.push(Finding::new(path.member(key), Syntax::NotAString(*other)));
            None
        }
    }
}

/// Reads a Multus pod. The first NIC is the implicit primary (cluster default network, eth0).
pub fn read(obj: &Value, namespace: &str) -> Workload {
    let mut w = Workload::new(Dialect::Multus);
    w.primary_network = annotations::get(obj, annotations::DEFAULT_NETWORK).map(|v| Field {
        path: annotations::path(annotations::DEFAULT_NETWORK),
        value: v.clone(),
    });
    // Read first, so that the NIC list is sized once, the primary included.
    let elements = annotations::get(obj, NETWORKS).map(read_sited);
    w.nics
        .reserve_exact(1 + elements.as_ref().map_or(0, |(items, ..)| items.len()));
    w.nics.push(Nic {
        name: Some("eth0".into()),
        path: FieldPath::new("the cluster default network (eth0)"),
        name_path: FieldPath::new(annotations::DEFAULT_NETWORK_PATH),
        mac: None,
        mac_parsed: None,
        mac_path: FieldPath::default(),
        binding: Vec::new(),
        method: None,
        network: None,
        ips: Vec::new(),
        port_id: None,
        present: true,
        primary: true,
        implicit: true,
        index: 0,
    });
    let Some((items, problems, sites)) = elements else {
        return w;
    };
    w.findings.extend(problems);
    w.text_sites = sites;
    for (i, el) in items.into_iter().enumerate() {
        let Some(el) = el else { continue };
        let path = FieldPath::element(annotations::NETWORKS_PATH, i);
        let field = |k: &'static str| path.member(k);
        let name = text(el.name, "name", &path, &mut w.findings);
        let ns = text(el.namespace, "namespace", &path, &mut w.findings);
        let ifname = text(el.interface, "interface", &path, &mut w.findings);
        let mac = text(el.mac, "mac", &path, &mut w.findings).filter(|m| !m.is_empty());
        if name.as_deref().is_none_or(str::is_empty) {
            w.found(field("name"), Fact::NoNetworkName);
        }
        let ips = match el.ips {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) if a.iter().all(Value::is_string) => a
                .into_iter()
                .filter_map(|v| match v {
                    Value::String(s) => Some(s),
                    _ => None,
                })
                .collect(),
            Some(_) => {
                w.found(field("ips"), Syntax::NotAListOfStrings);
                Vec::new()
            }
        };
        if !ips.is_empty() && el.claim_ref {
            w.found(field("ips"), Fact::IpsWithClaim);
        }
        if el.default_route.is_some_and(|v| !v.is_null()) {
            w.found(field("default-route"), Fact::DefaultRoute);
        }
        let network_ns = ns.as_deref().unwrap_or(namespace);
        let network = name.as_deref().map(|n| NetworkRef {
            namespace: network_ns.to_owned(),
            name: n.to_owned(),
        });
        let binding = vec![
            BindingField {
                key: "namespace".into(),
                path: field("namespace"),
                value: Value::String(network_ns.to_owned()),
                set_once: false,
            },
            BindingField {
                key: "name".into(),
                path: field("name"),
                value: name.map_or(Value::Null, |n| Value::String(n.into_owned())),
                set_once: false,
            },
            BindingField {
                key: "ips".into(),
                path: field("ips"),
                value: if ips.is_empty() {
                    Value::Null
                } else {
                    Value::from(ips.clone())
                },
                set_once: false,
            },
        ];
        w.nics.push(Nic {
            name: ifname.map(Cow::into_owned),
            name_path: field("interface"),
            mac_parsed: Nic::parse_mac(mac.as_deref()),
            mac: mac.map(Cow::into_owned),
            mac_path: field("mac"),
            binding,
            method: None,
            network,
            ips,
            port_id: None,
            present: true,
            primary: false,
            implicit: false,
            index: i,
            path,
        });
    }
    w
}

/// Writes MACs (`(element index, MAC)`) into the annotation, in JSON form, keeping element order
/// and every other field. When every element that gets a MAC is a plain JSON object without a
/// `mac` member, the MACs are spliced into the text as sent ([`splice_macs`], no decoding, the
/// rest byte for byte); otherwise the annotation is decoded and written again
/// ([`rewritten`]). Debug builds (every test) check that both give the same JSON. `sites`: where
/// the reader found the elements to end (its workload's [`TextSites`]), so that the splice need
/// not find them again; they are used only on the text they were found in.
pub fn write_macs(
    obj: &Value,
    sites: Option<&TextSites>,
    macs: &[(usize, Mac)],
    patch: &mut PatchBuilder,
) {
    let Some(raw) = annotations::get(obj, NETWORKS) else {
        return;
    };
    if let Some(text) = raw.as_str()
        && let Some(spliced) = match sites.and_then(|s| s.of(text)) {
            Some(ends) => {
                let spliced = splice_at(text, ends, macs);
                debug_assert_eq!(spliced, splice_macs(text, macs), "{text}");
                spliced
            }
            None => splice_macs(text, macs),
        }
    {
        #[cfg(debug_assertions)]
        {
            let slow = rewritten(raw, macs).map(|t| serde_json::from_str::<Value>(&t).ok());
            let fast = serde_json::from_str::<Value>(&spliced).ok();
            assert_eq!(Some(fast), slow, "spliced: {spliced}");
        }
        patch.set_annotation(NETWORKS, spliced);
        return;
    }
    if let Some(text) = rewritten(raw, macs) {
        patch.set_annotation(NETWORKS, text);
    }
}

/// The annotation decoded, its MACs set and encoded again (`None`: unreadable, or nothing changes).
fn rewritten(raw: &Value, macs: &[(usize, Mac)]) -> Option<String> {
    let parsed = parse_elements(raw);
    if !parsed.problems.is_empty() {
        return None;
    }
    let mut items = parsed.items;
    let mut changed = parsed.short_form;
    for (i, mac) in macs {
        if let Some(el) = items.get_mut(*i).and_then(Value::as_object_mut) {
            let text = mac.to_string();
            if el.get("mac").and_then(Value::as_str) != Some(text.as_str()) {
                el.insert("mac".into(), Value::String(text));
                changed = true;
            }
        }
    }
    changed.then(|| serde_json::to_string(&items).unwrap_or_default())
}

/// The JSON-form annotation `text` with `,"mac":"…"` (or `, "mac": "…"` where the element
/// writes `"key": value`) inserted before the closing brace of each element given a MAC;
/// everything else as sent. `None` when that would not be exactly the
/// rewrite: the short form, no MACs, an index given twice or past the end, or an element that
/// is not an object, already has a `mac` member or holds an escape (a key could spell `mac`
/// with one).
fn splice_macs(text: &str, macs: &[(usize, Mac)]) -> Option<String> {
    if macs.is_empty() {
        return None;
    }
    // `None` for the short form too (not a list).
    let items = elements_of(text)?;
    let base = text.as_ptr() as usize;
    splice_where(text, macs, |i| {
        let el = *items.get(i)?;
        if !el.starts_with('{') || !el.ends_with('}') || el.contains('\\') {
            return None;
        }
        Some(ElementEnd {
            // The element is a slice of `text`: its offset is the distance.
            close: el.as_ptr() as usize - base + el.len() - 1,
            empty: el[1..el.len() - 1].trim().is_empty(),
            // In the element's own style: `"key": value` or compact.
            spaced: el.contains("\": "),
            has_mac: el.contains("\"mac\""),
        })
    })
}

/// [`splice_macs`] at the element ends the reader found (`ends`, of `text`): the same text, or
/// `None` where it gives none, without scanning `text` for its elements again.
fn splice_at(text: &str, ends: &[ElementEnd], macs: &[(usize, Mac)]) -> Option<String> {
    splice_where(text, macs, |i| ends.get(i).copied())
}

/// The splice of `macs` (element index, MAC) into `text`, each element's end given by `end_of`
/// (`None`: not an object the splice can write into). `None` when that is not exactly the
/// rewrite: no MACs, an index given twice, an element without an end or with a `mac` already.
fn splice_where(
    text: &str,
    macs: &[(usize, Mac)],
    end_of: impl Fn(usize) -> Option<ElementEnd>,
) -> Option<String> {
    if macs.is_empty() {
        return None;
    }
    let mut cuts = Vec::with_capacity(macs.len());
    for (n, &(i, mac)) in macs.iter().enumerate() {
        if macs[..n].iter().any(|&(j, _)| j == i) {
            return None;
        }
        let end = end_of(i).filter(|e| !e.has_mac)?;
        cuts.push((end, mac));
    }
    cuts.sort_unstable_by_key(|(end, _)| end.close);
    Some(spliced(text, &cuts))
}

/// `text` with `"mac":"…"` written before the closing brace of each element of `cuts` (in offset
/// order), in the element's own style.
fn spliced(text: &str, cuts: &[(ElementEnd, Mac)]) -> String {
    let mut out = String::with_capacity(text.len() + cuts.len() * 26);
    let mut from = 0;
    for &(end, mac) in cuts {
        out.push_str(&text[from..end.close]);
        out.push_str(match (end.empty, end.spaced) {
            (true, _) => "\"mac\":\"",
            (false, false) => ",\"mac\":\"",
            (false, true) => ", \"mac\": \"",
        });
        out.push_str(mac.text().as_str());
        out.push('"');
        from = end.close;
    }
    out.push_str(&text[from..]);
    out
}

/// The top-level elements of the JSON list `text`, each as the slice of `text` it spans (what
/// `Vec<&RawValue>` gives, without decoding): a scan that follows strings (and their escapes)
/// and nesting only. `None` when the text is not shaped as a list of values.
///
/// It does not check the JSON within the elements: the splice works on an annotation the reader
/// has already read as JSON (a MAC is only asked for a NIC read from it), and debug builds check
/// every splice against the decoded rewrite.
fn elements_of(text: &str) -> Option<Vec<&str>> {
    let b = text.as_bytes();
    let mut i = b.iter().position(|c| !c.is_ascii_whitespace())?;
    if b[i] != b'[' {
        return None;
    }
    i += 1;
    let mut out = Vec::new();
    // Nesting inside the list; where the current element started.
    let mut depth = 0usize;
    let mut start = None;
    // Whether a comma came since the last element (a value then must follow).
    let mut expect_value = true;
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' => {
                if depth == 0 {
                    if !expect_value {
                        return None;
                    }
                    start = Some(i);
                }
                i += 1;
                // Up to the closing quote, past escapes (and control characters: not JSON, but
                // not this scan's to judge).
                loop {
                    i += first_escaped(b.get(i..)?)?;
                    match b[i] {
                        b'"' => break,
                        b'\\' => i += 2,
                        _ => i += 1,
                    }
                }
                if depth == 0 {
                    out.push(&text[start.take()?..=i]);
                    expect_value = false;
                }
            }
            b'{' | b'[' => {
                if depth == 0 {
                    if !expect_value {
                        return None;
                    }
                    start = Some(i);
                }
                depth += 1;
            }
            b'}' | b']' => {
                if depth == 0 {
                    // The list's own end: only whitespace may follow.
                    if c != b']' || (expect_value && !out.is_empty()) {
                        return None;
                    }
                    return b[i + 1..]
                        .iter()
                        .all(u8::is_ascii_whitespace)
                        .then_some(out);
                }
                depth -= 1;
                if depth == 0 {
                    out.push(&text[start.take()?..=i]);
                    expect_value = false;
                }
            }
            b',' if depth == 0 => {
                if expect_value {
                    return None;
                }
                expect_value = true;
            }
            c if depth == 0 && c.is_ascii_whitespace() => {}
            _ if depth == 0 => {
                // A number, `true`, `false` or `null`: up to the next delimiter.
                if !expect_value {
                    return None;
                }
                let end = b[i..]
                    .iter()
                    .position(|c| matches!(c, b',' | b']') || c.is_ascii_whitespace())
                    .map_or(b.len(), |n| i + n);
                out.push(&text[i..end]);
                expect_value = false;
                i = end;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_lone_surrogate_in_a_member_name_is_not_json_on_either_path() {
        let raw = json!(r#"[{"\ud800": 1, "name": "x"}]"#);
        let (items, problems) = read_elements(&raw);
        assert!(items.is_empty(), "{}", items.len());
        assert!(
            matches!(
                &problems[..],
                [Finding {
                    fact: Fact::Syntax(Syntax::NotJson(_)),
                    ..
                }]
            ),
            "{problems:?}"
        );
    }

    /// The ends the plain reader records give the splice of the text as sent: a `"key": value`
    /// style found from either quote of a string, a `mac` key or value (left to the rewrite), an
    /// empty object, whitespace around the list.
    #[test]
    fn the_reader_s_element_ends_splice_as_the_scan_s() {
        let m = |i: u64| Mac::from_u64(0x02_00_00_00_00_10 + i);
        for (text, want) in [
            (
                r#" [{"name":": x"}, { }, {"name": "b"}] "#,
                Some(
                    r#" [{"name":": x", "mac": "02:00:00:00:00:10"}, { "mac":"02:00:00:00:00:11"}, {"name": "b", "mac": "02:00:00:00:00:12"}] "#,
                ),
            ),
            (r#"[{"name":"a"},{"name":"mac"}]"#, None),
            (r#"[{"name":"a"},{"mac":"x"}]"#, None),
        ] {
            let raw = json!(text);
            let whole = raw.as_str().unwrap();
            let (_, _, sites) = read_sited(&raw);
            let ends = sites.as_ref().and_then(|s| s.of(whole)).expect(text);
            let macs: Vec<_> = (0..ends.len()).map(|i| (i, m(i as u64))).collect();
            assert_eq!(splice_at(whole, ends, &macs).as_deref(), want, "{text}");
            assert_eq!(splice_macs(whole, &macs).as_deref(), want, "{text}");
        }
    }

    #[test]
    fn macs_are_spliced_into_the_text_as_sent_only_where_that_is_the_rewrite() {
        let m1: Mac = "02:00:00:00:00:01".parse().unwrap();
        let m2: Mac = "02:00:00:00:00:02".parse().unwrap();
        let text = r#" [ {"name": "a", "x": {"y": "}"}} , {} ,{"name":"b","interface":"eth2"}] "#;
        assert_eq!(
            splice_macs(text, &[(2, m2), (0, m1)]).as_deref(),
            Some(
                r#" [ {"name": "a", "x": {"y": "}"}, "mac": "02:00:00:00:00:01"} , {} ,{"name":"b","interface":"eth2","mac":"02:00:00:00:00:02"}] "#
            )
        );
        assert_eq!(
            splice_macs(text, &[(1, m1)]).as_deref(),
            Some(
                r#" [ {"name": "a", "x": {"y": "}"}} , {"mac":"02:00:00:00:00:01"} ,{"name":"b","interface":"eth2"}] "#
            )
        );
        for (text, macs) in [
            ("net1@eth1", vec![(0, m1)]),
            (r#"[{"name":"a"}]"#, vec![]),
            (r#"[{"name":"a"}]"#, vec![(0, m1), (0, m2)]),
            (r#"[{"name":"a"}]"#, vec![(1, m1)]),
            (r#"[{"name":"a","mac":""}]"#, vec![(0, m1)]),
            (r#"[{"name":"a","mac":null}]"#, vec![(0, m1)]),
            (r#"[{"name":"a","m\u0061c":""}]"#, vec![(0, m1)]),
            (r#"[3]"#, vec![(0, m1)]),
            (r#"[{"name":"a"}"#, vec![(0, m1)]),
        ] {
            assert_eq!(splice_macs(text, &macs), None, "{text}");
        }
        // Either way, the same JSON comes out.
        for (text, macs) in [
            (text, vec![(0, m1), (2, m2)]),
            (r#"[{"name":"a","mac":"02:AA:00:00:00:01"}]"#, vec![(0, m1)]),
            ("net1@eth1, ns/net2", vec![(1, m2)]),
        ] {
            let obj = json!({"metadata": {"annotations": {NETWORKS: text}}});
            let mut patch = PatchBuilder::new(&obj);
            write_macs(&obj, None, &macs, &mut patch);
            let ops = serde_json::to_value(patch.finish()).unwrap();
            let written: Value = serde_json::from_str(ops[0]["value"].as_str().unwrap()).unwrap();
            let mut expected = parse_elements(&json!(text)).items;
            for (i, m) in &macs {
                expected[*i]["mac"] = json!(m.to_string());
            }
            assert_eq!(written, Value::Array(expected), "{text}");
        }
    }

    #[test]
    fn elements_are_found_where_raw_values_are() {
        let raw = |t: &str| -> Option<Vec<String>> {
            let v: Vec<&serde_json::value::RawValue> = serde_json::from_str(t).ok()?;
            Some(v.iter().map(|r| r.get().to_string()).collect())
        };
        let found = |t: &str| elements_of(t).map(|v| v.iter().map(|s| s.to_string()).collect());
        for text in [
            "[]",
            " [ ] ",
            "[1]",
            r#"[{"name":"a"},{"name":"b","x":[1,{"y":"]}"}]}]"#,
            r#" [ {"a": "q\"}\\"} , "s,]" , 12.5e3,true ,false,null, [[]], {} ] "#,
            r#"["\u005d", -0, {"k": "}"}]"#,
            "[\n{\"a\":1}\t,\r\n2]\n",
        ] {
            assert!(raw(text).is_some(), "{text}");
            assert_eq!(found(text), raw(text), "{text}");
        }
        // Not shaped as a list: no elements (the splice then falls back to decoding).
        for text in [
            "",
            "{}",
            "[",
            "[1",
            "[1,]",
            "[,1]",
            "[1 2]",
            "[1]]",
            "[1] x",
            "[}",
            r#"["a"#,
            r#"[{"a":1}"b"]"#,
            "[1,,2]",
        ] {
            assert_eq!(found(text), None, "{text}");
        }
    }

    proptest::proptest! {
        /// Any list of JSON values, compact or pretty: the scan finds what serde_json finds.
        #[test]
        fn elements_are_found_where_raw_values_are_on_any_list(
            items in proptest::collection::vec(json_value(), 0..6),
            pretty in proptest::bool::ANY,
        ) {
            let list = Value::from(items);
            let text = if pretty {
                serde_json::to_string_pretty(&list).unwrap()
            } else {
                serde_json::to_string(&list).unwrap()
            };
            let raw: Vec<&serde_json::value::RawValue> = serde_json::from_str(&text).unwrap();
            let raw: Vec<&str> = raw.iter().map(|r| r.get()).collect();
            proptest::prop_assert_eq!(elements_of(&text), Some(raw));
        }
    }

    proptest::proptest! {
        /// Lists of flat objects of short strings, in any spacing, and texts cut or spliced from
        /// them: what the plain reader takes, the serde readers read the same.
        #[test]
        fn the_plain_form_is_read_as_serde_reads_it(
            items in proptest::collection::vec(
                proptest::collection::vec(
                    (
                        proptest::prop_oneof![
                            proptest::strategy::Just("name".to_owned()),
                            proptest::strategy::Just("interface".to_owned()),
                            proptest::strategy::Just("mac".to_owned()),
                            proptest::strategy::Just("ips".to_owned()),
                            "[a-z\"\\\\\u{1}]{0,4}",
                        ],
                        "[a-z0-9:\"\\\\\u{1}é ]{0,6}",
                    ),
                    0..4,
                ),
                0..4,
            ),
            space in "[ \t\n\r\u{c}]{0,2}",
            cut in 0usize..200,
            kubectl_style in proptest::bool::ANY,
        ) {
            // Also `"key": value`, as kubectl and most tools write it.
            let colon = if kubectl_style { ": ".to_owned() } else { format!("{space}:{space}") };
            let member = |(k, v): &(String, String)| format!("\"{k}\"{colon}\"{v}\"");
            let object = |m: &Vec<(String, String)>| {
                let members: Vec<String> = m.iter().map(member).collect();
                format!("{{{space}{}{space}}}", members.join(&format!("{space},{space}")))
            };
            let objects: Vec<String> = items.iter().map(object).collect();
            let text = format!("{space}[{space}{}{space}]{space}", objects.join(","));
            let cut = text.char_indices().nth(cut).map_or(text.len(), |(i, _)| i);
            for text in [&text[..], &text[..cut]] {
                let raw = json!(text);
                proptest::prop_assert_eq!(read_elements(&raw), slow_elements(&raw), "{}", text);
                if let Some((plain, _)) = plain_elements(text) {
                    let serde: Vec<MaybeElement> = serde_json::from_str(text).unwrap();
                    let serde: Vec<_> = serde.into_iter().map(|e| e.0).collect();
                    proptest::prop_assert_eq!(plain, serde, "{}", text);
                }
                // Where the reader found the elements to end, the splice writes what it writes
                // when it finds them itself: for every element, all of them, one past the end
                // and one given twice.
                let (_, _, sites) = read_sited(&raw);
                let whole = raw.as_str().unwrap();
                if let Some(ends) = sites.as_ref().and_then(|s| s.of(whole)) {
                    let mac = |i: usize| Mac::from_u64(0x02_00_00_00_00_00 + i as u64);
                    let n = ends.len();
                    let mut cases: Vec<Vec<(usize, Mac)>> = (0..=n).map(|i| vec![(i, mac(i))]).collect();
                    cases.push((0..n).rev().map(|i| (i, mac(i))).collect());
                    cases.push(vec![(0, mac(0)), (0, mac(1))]);
                    for macs in cases {
                        proptest::prop_assert_eq!(
                            splice_at(whole, ends, &macs),
                            splice_macs(whole, &macs),
                            "{} {:?}", text, macs
                        );
                    }
                }
                // Tied to the text: not found on an equal text elsewhere.
                let other = whole.to_owned();
                proptest::prop_assert!(sites.is_none_or(|s| s.of(&other).is_none()));
            }
        }
    }

    /// JSON values with the strings that trip a scan: quotes, backslashes, brackets, commas,
    /// control characters and non-ASCII text.
    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            "[a-z\\\\\"\\[\\]{},: \n\t\u{1}é✓]{0,10}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map("[a-z\"\\\\{}]{0,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    #[test]
    fn short_form() {
        let e = parse_elements(&json!("macvlan-conf@eth1, demo/bridge-conf ,a/b@c"));
        assert!(e.problems.is_empty());
        assert_eq!(
            e.items,
            vec![
                json!({"name": "macvlan-conf", "interface": "eth1"}),
                json!({"name": "bridge-conf", "namespace": "demo"}),
                json!({"name": "b", "namespace": "a", "interface": "c"}),
            ]
        );
        for bad in ["a,,b", "a@b@c", "a/b/c", "/x", "x@", "a,"] {
            assert!(!parse_elements(&json!(bad)).problems.is_empty(), "{bad}");
        }
    }

    #[test]
    fn elements_read_straight_are_the_elements_parsed() {
        for text in [
            r#"[{"name":"a","interface":"eth1","mac":"02:00:00:00:00:01","x":{"y":[1,2]}}]"#,
            r#"[{"name":"a","name":"b","namespace":null,"interface":7,"mac":["m"]}, 3, "s", [1], null, true]"#,
            r#"[{"name":"a","ips":["10.0.0.1/24"],"ipam-claim-reference":null,"default-route":["1.1.1.1"]}]"#,
            r#"[{"name":"a","ips":[1],"default-route":null}]"#,
            r#"[{"name":"a\u0062\n","interface":{"k":[1,{"z":null}]},"namespace":true,"mac":-1.5}]"#,
            r#"[{"name":18446744073709551615,"interface":-3,"mac":{}}]"#,
            r#"[{"name":"a","cni-args":{"big":1e400}}]"#,
            r#"[{"name":"a"}"#,
            r#"[{"name":"a"}] x"#,
            "[]",
            " [ ] ",
            "net1@eth1, ns/net2",
            "",
            // The plain form, and texts one step from it.
            r#"[{"name":"a","namespace":"n","interface":"eth1","mac":"02:00:00:00:00:01"}]"#,
            " [ {\"name\" :\t\"a\" ,\n\"ips\": \"x\"} ,{}\r] ",
            r#"[{"name":"a","name":"b","ipam-claim-reference":"c","default-route":"d","x":"y"}]"#,
            r#"[{"name":"a\"b"}]"#,
            "[{\"name\":\"a\u{1}\"}]",
            "[{\"name\":\"a\"}\u{c}]",
            r#"[{"name":"é✓"},{"name":"a",}]"#,
            r#"[{"name":"a"},]"#,
            r#"[{"name":"a"} {"name":"b"}]"#,
            r#"[{"name" "a"}]"#,
            r#"[{"name":"a""#,
            r#"[{"name":"a"}]]"#,
            // A raw control character in a name is not JSON, an escaped one is.
            "[{\"a\u{1}\":1,\"name\":\"b\"}]",
            r#"[{"a\u0001":1,"name":"b"}]"#,
            // A name with an escape: read the slow way, the same.
            r#"[{"n\u0061me":"a","interface":7}]"#,
        ] {
            let raw = json!(text);
            assert_eq!(read_elements(&raw), slow_elements(&raw), "{text}");
        }
        // Only the plain form is read without serde.
        assert!(plain_elements(r#" [{"name": "a"}, {}] "#).is_some());
        for text in [r#"[{"name":"a\"b"}]"#, r#"[{"name":1}]"#, "[3]", "net1"] {
            assert!(plain_elements(text).is_none(), "{text}");
        }
        assert_eq!(read_elements(&json!(5)), slow_elements(&json!(5)));
    }

    #[test]
    fn json_form_errors_are_syntax_findings() {
        assert!(matches!(
            parse_elements(&json!("[{")).problems[0].fact,
            Fact::Syntax(Syntax::NotJson(_))
        ));
        assert_eq!(
            parse_elements(&json!("[1]")).problems[0].path,
            "metadata.annotations[k8s.v1.cni.cncf.io/networks][0]"
        );
        assert!(parse_elements(&json!(5)).problems[0].is_syntax());
    }
}

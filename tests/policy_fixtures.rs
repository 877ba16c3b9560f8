//! The policy against every real API-server capture: what hotnic answers each one.

mod support;
use support::*;

/// The fixtures whose object hotnic denies after mutation, with the fields named; every other
/// fixture is allowed.
const DENIED: &[(&str, &[&str])] = &[
    // Short form `ns/net,ns/net`: the second network has no interface name.
    (
        "003",
        &["metadata.annotations[k8s.v1.cni.cncf.io/networks][1].interface"],
    ),
    (
        "004",
        &["metadata.annotations[k8s.v1.cni.cncf.io/networks][1].interface"],
    ),
];

/// Fixtures with nothing for hotnic to add: an update that already carries every MAC, and the
/// Arktos pod whose `spec.nics` a vanilla API server dropped before admission.
const NOTHING_TO_ADD: &[&str] = &["009", "010", "013"];

#[test]
fn every_fixture_gets_the_expected_answer() {
    let fixtures = fixtures();
    for (name, review) in &fixtures {
        let p = policy();
        let req = Req::from_review(review);
        let m = p.mutate(&req.as_request());
        let patch = m
            .patch()
            .unwrap_or_else(|| panic!("{name}: mutate denied: {m:?}"));
        let prefix = &name[..3];
        assert_eq!(
            patch.0.is_empty(),
            NOTHING_TO_ADD.contains(&prefix),
            "{name}: patch {patch}"
        );
        // The patch applies, and mutating its result again changes nothing.
        let mutated = Req {
            object: apply(&req, &m),
            ..req.clone()
        };
        let again = p.mutate(&mutated.as_request());
        assert_eq!(
            again.patch().map(|p| p.0.len()),
            Some(0),
            "{name}: not idempotent: {again:?}"
        );
        // Validation of the mutated object: the expected verdict, never a patch.
        let v = p.validate(&mutated.as_request());
        assert_eq!(v.patch().map(|p| p.0.len()).unwrap_or(0), 0, "{name}");
        let fields: Vec<&str> = v
            .denial()
            .map(|d| d.causes.iter().map(|c| c.field.as_str()).collect())
            .unwrap_or_default();
        let expected = DENIED
            .iter()
            .find(|(p, _)| *p == prefix)
            .map(|(_, f)| f.to_vec())
            .unwrap_or_default();
        assert_eq!(fields, expected, "{name}: {v:?}");
    }
    assert!(
        DENIED
            .iter()
            .map(|(p, _)| p)
            .chain(NOTHING_TO_ADD)
            .all(|p| fixtures.iter().any(|(n, _)| n.starts_with(p))),
        "every fixture named here exists"
    );
}

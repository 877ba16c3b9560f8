//! The policy against every real API-server capture.
mod support;
use support::*;

#[test]
fn every_fixture_round_trips() {
    let p = policy();
    for (name, review) in fixtures() {
        let req = Req::from_review(&review);
        let m = p.mutate(&req.as_request());
        let v = p.validate(&req.as_request());
        println!("{name}: mutate {:?}\n   validate {:?}", m, v.denial());
    }
}

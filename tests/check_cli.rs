//! `hotnic check` on the shipped examples: verdicts, exit codes, and clear errors on bad input.
use std::process::Command;

fn check(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hotnic"))
        .arg("check")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run hotnic");
    (
        out.status.code().expect("exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn creates_are_allowed_with_injected_macs() {
    for (file, needle) in [
        (
            "examples/multus/pod.yaml",
            "\"interface\": \"eth2\", \"mac\": \"02:",
        ),
        ("examples/arktos/vm-pod.yaml", "hotnic.io/mac-addresses"),
        ("examples/kubevirt/vm.yaml", "macAddress: 02:"),
    ] {
        let (code, out, err) = check(&["--new", file]);
        assert_eq!(code, 0, "{file}: {out}{err}");
        assert!(out.starts_with("ALLOWED"), "{out}");
        assert!(out.contains(needle), "{file}: {out}");
        assert!(out.contains("hotnic.io/interface-capacity"), "{out}");
    }
}

#[test]
fn hot_plugs_are_allowed_and_print_the_patch() {
    let cases = [
        (
            "examples/multus/pod.yaml",
            "--merge-patch",
            "examples/multus/hotplug.merge-patch.yaml",
            "eth3",
        ),
        (
            "examples/arktos/vm-pod.yaml",
            "--json-patch",
            "examples/arktos/hotplug.json-patch.json",
            "eth2",
        ),
        (
            "examples/kubevirt/vm.yaml",
            "--json-patch",
            "examples/kubevirt/hotplug.json-patch.json",
            "interfaces/2/macAddress",
        ),
    ];
    for (old, flag, patch, needle) in cases {
        let (code, out, err) = check(&["--old", old, flag, patch, "--patch"]);
        assert_eq!(code, 0, "{patch}: {out}{err}");
        let json = out.trim_start_matches("ALLOWED\n");
        let ops: serde_json::Value =
            serde_json::from_str(json).unwrap_or_else(|e| panic!("{patch}: {e}: {out}"));
        assert!(ops.to_string().contains(needle), "{patch}: {out}");
    }
    let (code, out, _) = check(&[
        "--old",
        "examples/kubevirt/vm.yaml",
        "--json-patch",
        "examples/kubevirt/unplug.json-patch.json",
        "--patch",
    ]);
    assert_eq!((code, out.as_str()), (0, "ALLOWED\n[]\n"));
}

#[test]
fn invalid_updates_are_denied_with_field_paths() {
    let cases = [
        (
            "examples/multus/pod.yaml",
            "--merge-patch",
            "examples/multus/invalid.merge-patch.yaml",
            &[
                "metadata.annotations[k8s.v1.cni.cncf.io/networks][2].interface: missing",
                "metadata.annotations[k8s.v1.cni.cncf.io/networks][0].name: changed",
            ][..],
        ),
        (
            "examples/arktos/vm-pod.yaml",
            "--json-patch",
            "examples/arktos/invalid.json-patch.json",
            &["spec.nics[0].portID: changed", "spec.nics: \"eth0\""][..],
        ),
        (
            "examples/kubevirt/vm.yaml",
            "--json-patch",
            "examples/kubevirt/invalid.json-patch.json",
            &[
                "spec.template.spec.domain.devices.interfaces: interface \"secondary\"",
                "hot-plug supports only the bridge or sriov binding",
                "requests[kubevirt.io/interface]: changed",
            ][..],
        ),
    ];
    for (old, flag, patch, needles) in cases {
        let (code, out, err) = check(&["--old", old, flag, patch]);
        assert_eq!(code, 1, "{patch}: {out}{err}");
        assert!(out.starts_with("DENIED (403 Forbidden)"), "{out}");
        for n in needles {
            assert!(out.contains(n), "{patch}: missing {n:?} in {out}");
        }
    }
}

#[test]
fn reviews_are_read_whole() {
    let review = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/apiserver-v1.32/015-mutate-create-virtualmachine-vm-fedora.json"
    );
    let (code, out, err) = check(&["--review", review, "--patch"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("/spec/template/spec/domain/devices/interfaces/1/macAddress"),
        "{out}"
    );
}

#[test]
fn bad_input_exits_2_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    };
    let cases = [
        (
            dir.path()
                .join("missing.yaml")
                .to_string_lossy()
                .into_owned(),
            "cannot read",
        ),
        (write("bad.json", "{\"kind\": "), "not valid JSON"),
        (write("bad.yaml", "kind: [unclosed"), "not valid YAML"),
        (write("list.yaml", "- a\n- b\n"), "not a Kubernetes object"),
        (
            write("nokind.yaml", "apiVersion: v1\nmetadata: {}\n"),
            "has no kind",
        ),
    ];
    for (file, problem) in cases {
        let (code, out, err) = check(&["--new", &file]);
        assert_eq!(code, 2, "{file}: {out}{err}");
        assert!(
            err.contains(&file) && err.contains(problem),
            "{file}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    let review = write(
        "review.json",
        "{\"apiVersion\": \"admission.k8s.io/v1\", \"kind\": \"AdmissionReview\"}",
    );
    let (code, _, err) = check(&["--review", &review]);
    assert_eq!(code, 2);
    assert!(err.contains("no request"), "{err}");
}

/// `check --review` reads reviews with the webhook's own parser: the same envelope checks.
#[test]
fn reviews_get_the_webhooks_envelope_checks() {
    let dir = tempfile::tempdir().unwrap();
    let fixture: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/apiserver-v1.32/001-mutate-create-pod-web-multus.json"
        ))
        .unwrap(),
    )
    .unwrap();
    use serde_json::json;
    // (JSON pointer into the review, its new value, the problem reported)
    let cases = [
        (
            "/apiVersion",
            json!("admission.k8s.io/v1beta1"),
            "apiVersion \"admission.k8s.io/v1beta1\" is not supported",
        ),
        ("/kind", json!("Pod"), "kind \"Pod\" is not AdmissionReview"),
        ("/request/uid", json!(""), "request.uid is missing"),
        (
            "/request/operation",
            json!("PATCH"),
            "request.operation \"PATCH\" is unknown",
        ),
        (
            "/request/kind",
            json!({"kind": "Pod"}),
            "not a valid AdmissionReview",
        ),
        ("/request/object", json!(null), "request.object missing"),
    ];
    for (i, (what, value, problem)) in cases.into_iter().enumerate() {
        let mut review = fixture.clone();
        *review.pointer_mut(what).unwrap() = value;
        let file = dir.path().join(format!("{i}.json"));
        std::fs::write(&file, review.to_string()).unwrap();
        let file = file.to_string_lossy().into_owned();
        let (code, out, err) = check(&["--review", &file]);
        assert_eq!(code, 2, "{what}: {out}{err}");
        assert!(
            err.contains(&file) && err.contains(problem),
            "{what}: {err}"
        );
    }
}

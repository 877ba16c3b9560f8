#!/usr/bin/env python3
"""Seeds the fuzz corpus from the API-server captures in tests/fixtures (the corpus is not committed)."""
import json, pathlib
here = pathlib.Path(__file__).resolve().parent
src = here.parent / "tests" / "fixtures" / "apiserver-v1.32"
out = here / "corpus" / "admission"
out.mkdir(parents=True, exist_ok=True)
kinds = {"Pod": 0, "VirtualMachine": 1, "VirtualMachineInstance": 2}
for f in sorted(src.glob("*.json")):
    r = json.loads(f.read_text())["request"]
    data = bytes([kinds[r["kind"]["kind"]]]) + json.dumps(r["object"]).encode()
    if r.get("oldObject"):
        data += b"\0" + json.dumps(r["oldObject"]).encode()
    (out / f.stem).write_bytes(data)
print(f"seeded {out}")

//! The three dialects of "a workload with NICs": reading them into the model and writing patches
//! back in each one's own form.
use crate::model::{Dialect, Workload};
use serde_json::Value;

/// Which dialect an object speaks. `Err(None)`: not hotnic's business; `Err(Some(w))`: skipped,
/// with a warning.
pub fn detect(
    _group: &str,
    _kind: &str,
    _obj: &Value,
    _old: Option<&Value>,
) -> Result<Dialect, Option<String>> {
    Err(None)
}

/// Reads an object in a dialect. `namespace` is the request's (objects may lack it on CREATE).
pub fn read(d: Dialect, _obj: &Value, _namespace: &str) -> Workload {
    Workload::new(d)
}

/// Whether a VMI is owned by a VirtualMachine (it then inherits the VM's MACs).
pub fn owned_by_vm(_obj: &Value) -> bool {
    false
}

//! `kubectl-hotnic`: the kubectl plugin (`kubectl hotnic add|remove|list|completion`). Everything
//! is in the library ([`hotnic::nic`]); the same commands are `hotnic nic ...`.
#![forbid(unsafe_code)]

fn main() {
    std::process::exit(hotnic::nic::plugin_main());
}

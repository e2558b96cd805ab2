//! `lbctl --version` names the commit it was built from.

include!("../build-support/commit.rs");

fn main() {
    emit_commit();
}

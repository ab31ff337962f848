//! Misuse of the macros that must not compile: an invalid literal metric name, a malformed
//! label list, an invalid label key, misplaced or unsorted buckets; an `audit!` without
//! `actor`/`action`/`outcome` or with one twice, a `security_event!` without `kind` (each error
//! names the field).

#[test]
fn misused_macros_do_not_compile() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}

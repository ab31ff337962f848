//! Misuse of the metric macros that must not compile: an invalid literal metric name, a
//! malformed label list, an invalid label key, and misplaced or unsorted buckets.

#[test]
fn misused_macros_do_not_compile() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}

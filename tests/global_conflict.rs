//! `init()` refuses, with an error and no panic, when another global subscriber exists.

#[test]
fn init_after_another_global_subscriber_is_an_error() {
    tracing::subscriber::set_global_default(tracing::subscriber::NoSubscriber::default()).unwrap();
    let err = mercenary_obs::Obs::builder()
        .log_writer(std::io::sink())
        .init()
        .unwrap_err();
    assert!(
        matches!(err, mercenary_obs::Error::GlobalSubscriberAlreadySet),
        "{err:?}"
    );
    assert!(err.to_string().contains("subscriber"));
}

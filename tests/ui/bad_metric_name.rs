// A literal name that is not a valid Prometheus metric name does not compile.
fn main() {
    mercenary_obs::counter!("user-signups.total").inc();
}

// A label key that Prometheus refuses does not compile.
fn main() {
    mercenary_obs::counter!("payments_total", "__reserved" => "x").inc();
}

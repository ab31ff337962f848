// A label list that is not `"key" => value, ...` does not compile.
fn main() {
    let plan = "pro";
    mercenary_obs::counter!("user_signups_total", plan = "pro").inc();
    mercenary_obs::counter!("user_signups_total", "plan" => ).inc();
    mercenary_obs::counter!("user_signups_total", "plan" plan).inc();
}

// `buckets:` belongs to histograms; unsorted buckets are refused too.
fn main() {
    mercenary_obs::counter!("payments_total", buckets: [1.0, 2.0]).inc();
    mercenary_obs::histogram!("payment_amount_dollars", buckets: [10.0, 1.0]).observe(1.0);
}

fn main() {
    mercenary_obs::security_event!(actor = "a", attempts = 3);
}

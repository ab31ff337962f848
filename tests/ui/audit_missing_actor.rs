fn main() {
    mercenary_obs::audit!(action = "login", outcome = "success", resource = "r");
}

fn main() {
    mercenary_obs::audit!(actor = "a", action = "login", actor = "b", outcome = "success");
}

fn main() {
    let user = "u-1";
    mercenary_obs::audit!(action = "login", actor = user);
}

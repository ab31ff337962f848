use super::*;

#[test]
fn driver_names_map_to_otel_system_names() {
    assert_eq!(system_name("PostgreSQL"), "postgresql");
    assert_eq!(system_name("SQLite"), "sqlite");
    assert_eq!(system_name("MySQL"), "mysql");
    assert_eq!(system_name("Something"), "other_sql");
}

//! The admin listener: `/metrics`, `/debug/traces` and `/healthz` on an address of their own,
//! not counted as application traffic; a bad address is an error naming the setting.

use crate::common;

use mercenary_obs::Obs;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_serves_what_the_application_port_does_not() {
    let obs = Obs::builder()
        .service_name("admin")
        .log_writer(std::io::sink())
        .process_metrics(false)
        .from_vars([("MERCENARY_OBS_ADMIN_ADDR", "127.0.0.1:0")])
        .build()
        .unwrap();
    let admin = obs
        .serve_admin()
        .await
        .unwrap()
        .expect("an admin address is set");
    let app = common::traced_routes().layer(obs.layer());
    let public = common::serve(app).await;
    assert_eq!(common::get(public, "/ok", &[]).await.status, 200);
    assert_eq!(
        common::get(public, "/metrics", &[]).await.status,
        404,
        "the application port does not serve /metrics"
    );
    for _ in 0..3 {
        assert_eq!(common::get(admin, "/healthz", &[]).await.status, 200);
    }
    let traces = common::get(admin, "/debug/traces", &[]).await;
    assert_eq!(traces.status, 200);
    let metrics = common::get(admin, "/metrics", &[]).await;
    assert_eq!(metrics.status, 200);
    let text = String::from_utf8(metrics.body).unwrap();
    let routes: Vec<String> = common::samples(&text, "http_server_request_duration_seconds_count")
        .into_iter()
        .map(|(labels, _)| labels)
        .collect();
    assert!(
        routes.iter().any(|l| l.contains("http_route=\"/ok\"")),
        "{routes:?}"
    );
    assert!(
        routes
            .iter()
            .all(|l| !l.contains("/healthz") && !l.contains("/metrics") && !l.contains("/debug")),
        "admin requests are not application traffic: {routes:?}"
    );
}

#[tokio::test]
async fn no_admin_address_no_listener_and_a_bad_one_is_an_error() {
    let obs = Obs::builder().log_writer(std::io::sink()).build().unwrap();
    assert_eq!(obs.serve_admin().await.unwrap(), None);
    let err = Obs::builder()
        .log_writer(std::io::sink())
        .from_vars([("MERCENARY_OBS_ADMIN_ADDR", "localhost")])
        .build()
        .unwrap_err()
        .to_string();
    assert!(err.contains("MERCENARY_OBS_ADMIN_ADDR"), "{err}");
    // Taken already: binding fails, naming the setting.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let obs = Obs::builder()
        .log_writer(std::io::sink())
        .admin_addr(addr)
        .build()
        .unwrap();
    let err = obs.serve_admin().await.unwrap_err().to_string();
    assert!(err.contains("MERCENARY_OBS_ADMIN_ADDR"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_moves_its_admin_routes_to_the_admin_listener() {
    use crate::common::processes::{Demo, free_port};
    let admin_addr = format!("127.0.0.1:{}", free_port());
    let mut demo = Demo::start(&[("MERCENARY_OBS_ADMIN_ADDR", admin_addr.as_str())]).await;
    let admin: std::net::SocketAddr = admin_addr.parse().unwrap();
    assert_eq!(common::get(demo.addr, "/users/7", &[]).await.status, 200);
    assert_eq!(common::get(demo.addr, "/metrics", &[]).await.status, 404);
    assert_eq!(
        common::get(demo.addr, "/debug/traces", &[]).await.status,
        404
    );
    assert_eq!(common::get(demo.addr, "/healthz", &[]).await.status, 200);
    let mut metrics = None;
    for _ in 0..50 {
        let r = common::get(admin, "/metrics", &[]).await;
        if r.status == 200 {
            metrics = Some(String::from_utf8(r.body).unwrap());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let metrics = metrics.expect("the admin listener serves /metrics");
    assert!(metrics.contains("http_route=\"/users/{id}\""), "{metrics}");
    assert_eq!(common::get(admin, "/healthz", &[]).await.status, 200);
    assert_eq!(common::get(admin, "/debug/traces", &[]).await.status, 200);
    assert!(demo.stop().success());
}

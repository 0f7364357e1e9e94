//! `/v1/services` over HTTP, and route clashes refused at submit.

use std::time::{Duration, Instant};

use crate::test_server::TestServer;

fn job(name: &str, service: &str, route: &str) -> String {
    format!(
        "name: {name}
groups:
  - name: web
    service:
      name: {service}
      port: http
      route: {route}
    tasks:
      - name: app
        image: org/app:1.0
        ports: {{http: 8080}}
"
    )
}

async fn submit(http: &reqwest::Client, base: &str, file: &str, text: String) -> (u16, String) {
    let r = http
        .post(format!("{base}/v1/jobs?filename={file}"))
        .body(text)
        .send()
        .await
        .expect("submit");
    (r.status().as_u16(), r.text().await.expect("body"))
}

/// The body's spec errors as `file:line:col: path: message`.
fn spec_errors(body: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(body).expect("json");
    v["spec_errors"]
        .as_array()
        .expect("spec_errors")
        .iter()
        .map(|e| {
            format!(
                "{}:{}:{}: {}: {}",
                e["file"].as_str().unwrap_or(""),
                e["line"],
                e["column"],
                e["path"].as_str().unwrap_or(""),
                e["message"].as_str().unwrap_or("")
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_another_job_claims_is_refused_naming_both_and_nothing_is_stored() {
    let server = TestServer::start().await;
    let base = server.serve().await;
    let http = reqwest::Client::new();
    let (code, body) = submit(
        &http,
        &base,
        "shop.yaml",
        job("shop", "shop", "{hosts: [shop.example.com], paths: [/api]}"),
    )
    .await;
    assert_eq!(code, 200, "{body}");

    // The same host and path; the same name; another job's automatic host.
    for (file, text, want) in [
        (
            "other.yaml",
            job(
                "other",
                "other",
                "{hosts: [shop.example.com], paths: [/api/]}",
            ),
            "other.yaml:7:22: groups[0].service.route.hosts: host shop.example.com, path /api is already routed to service `shop` of job `shop` (shop.yaml:7:22)",
        ),
        (
            "twin.yaml",
            job("twin", "shop", "{paths: [/twin]}"),
            "twin.yaml:5:13: groups[0].service.name: service name `shop` is already taken by service `shop` of job `shop` (shop.yaml:5:13)",
        ),
        (
            "steal.yaml",
            job("steal", "steal", "{hosts: [shop.localhost]}"),
            "steal.yaml:7:22: groups[0].service.route.hosts: host shop.localhost, path / is already routed to service `shop` of job `shop` (shop.yaml:5:13)",
        ),
    ] {
        let name = file.trim_end_matches(".yaml");
        let (code, body) = submit(&http, &base, file, text).await;
        assert_eq!(code, 400, "{body}");
        let errors = spec_errors(&body);
        assert!(
            errors.iter().any(|e| e.starts_with(want)),
            "want {want}\nin {errors:#?}"
        );
        let r = http
            .get(format!("{base}/v1/jobs/{name}"))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 404, "{name} must not be stored");
        // A plan is refused the same way.
        let r = http
            .post(format!("{base}/v1/jobs?filename={file}&plan=true"))
            .body(job(
                name,
                if name == "twin" { "shop" } else { name },
                "{hosts: [shop.example.com], paths: [/api]}",
            ))
            .send()
            .await
            .expect("plan");
        assert_eq!(r.status(), 400);
    }

    // The job may change its own route; once stopped, its claims are free.
    let (code, body) = submit(
        &http,
        &base,
        "shop.yaml",
        job(
            "shop",
            "shop",
            "{hosts: [shop.example.com], paths: [/api, /v2]}",
        ),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let r = http
        .delete(format!("{base}/v1/jobs/shop"))
        .send()
        .await
        .expect("stop");
    assert_eq!(r.status(), 200);
    let (code, body) = submit(
        &http,
        &base,
        "other.yaml",
        job(
            "other",
            "shop",
            "{hosts: [shop.example.com], paths: [/api]}",
        ),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_is_a_blocking_query() {
    let server = TestServer::start().await;
    let base = server.serve().await;
    let http = reqwest::Client::new();
    let cat: corral_types::catalog::ServiceCatalog = http
        .get(format!("{base}/v1/services"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert!(cat.services.is_empty());
    let r = http
        .get(format!("{base}/v1/services/web"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 404);
    assert!(r.text().await.expect("body").contains("corral service ls"));

    let waiter = {
        let (http, base) = (http.clone(), base.clone());
        let index = cat.index;
        tokio::spawn(async move {
            let started = Instant::now();
            let cat: corral_types::catalog::ServiceCatalog = http
                .get(format!("{base}/v1/services?index={index}&wait=20s"))
                .send()
                .await
                .expect("get")
                .json()
                .await
                .expect("json");
            (started.elapsed(), cat)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (code, body) = submit(
        &http,
        &base,
        "web.yaml",
        job("web", "web", "{paths: [/web]}"),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let (took, cat) = waiter.await.expect("waiter");
    assert!(
        took < Duration::from_secs(15),
        "woke at the change, took {took:?}"
    );
    assert_eq!(cat.services.len(), 1);
    assert_eq!(cat.services[0].name, "web");
    server.stop().await;
}

/// A revert to a version whose route another job took since is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revert_to_a_route_taken_since_is_refused() {
    let server = TestServer::start().await;
    let base = server.serve().await;
    let http = reqwest::Client::new();
    for (file, text) in [
        ("shop.yaml", job("shop", "shop", "{paths: [/api]}")),
        ("shop.yaml", job("shop", "shop", "{paths: [/v2]}")),
        ("other.yaml", job("other", "other", "{paths: [/api]}")),
    ] {
        let (code, body) = submit(&http, &base, file, text).await;
        assert_eq!(code, 200, "{body}");
    }
    let r = http
        .post(format!("{base}/v1/jobs/shop/revert"))
        .json(&serde_json::json!({"version": 1}))
        .send()
        .await
        .expect("revert");
    let code = r.status().as_u16();
    let body = r.text().await.expect("body");
    assert_eq!(code, 400, "{body}");
    let errors = spec_errors(&body);
    assert!(
        errors.iter().any(|e| e.contains("any host, path /api is already routed to service `other` of job `other` (other.yaml:7:22)")),
        "{errors:#?}"
    );
    server.stop().await;
}

/// A TCP router port inside the host ports tasks get would be taken by a
/// task's published port; a TCP service's name claims no host name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_route_ports_stay_out_of_the_task_port_range() {
    let server = TestServer::start().await;
    let base = server.serve().await;
    let http = reqwest::Client::new();
    let tcp = |name: &str, port: u16| {
        format!(
            "name: {name}
groups:
  - name: db
    service: {{name: {name}, type: tcp, port: db, route: {{port: {port}}}}}
    tasks: [{{name: db, image: org/db:1, ports: {{db: 5432}}}}]
"
        )
    };
    let (code, body) = submit(&http, &base, "db.yaml", tcp("db", 31001)).await;
    assert_eq!(code, 400, "{body}");
    let errors = spec_errors(&body);
    assert!(
        errors.iter().any(|e| e.starts_with("db.yaml:4:60: groups[0].service.route.port: router port 31001 is inside the host ports 20000-32000")),
        "{errors:#?}"
    );
    let (code, body) = submit(&http, &base, "db.yaml", tcp("db", 15432)).await;
    assert_eq!(code, 200, "{body}");
    // `db.localhost` is no route of the TCP service: another job may have it.
    let (code, body) = submit(
        &http,
        &base,
        "web.yaml",
        job("web", "web", "{hosts: [db.localhost]}"),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    server.stop().await;
}

//! One `flotilla server` started with flags only: admin split/merge,
//! AUTH, config errors naming the field, another cluster's data directory
//! refused, graceful shutdown keeps acknowledged writes.

mod server_support;

use std::time::Duration;

use redis::Commands;
use server_support::*;

#[test]
fn flags_only_single_node_split_merge_and_restart() {
    let mut node = SingleNode::start(&[]);
    let mut conn = node.server.redis();
    for i in 0..100 {
        let _: () = conn.set(format!("key{i:03}"), i).unwrap();
    }
    let split = admin_json(&node.server, &["split", "key050"]).unwrap();
    let right = split["new_range_id"].as_u64().unwrap();
    let ranges = admin_json(&node.server, &["ranges"]).unwrap();
    assert_eq!(ranges.as_array().unwrap().len(), 2);
    let left = ranges[0]["id"].as_u64().unwrap();
    let rows: Vec<String> = redis::cmd("FLOTILLA.SCAN")
        .arg("key048")
        .arg("key052")
        .query(&mut conn)
        .unwrap();
    assert_eq!(
        rows,
        ["key048", "48", "key049", "49", "key050", "50", "key051", "51"]
    );
    let rows: Vec<String> = redis::cmd("FLOTILLA.SCAN")
        .arg("")
        .arg("")
        .arg("LIMIT")
        .arg("3")
        .query(&mut conn)
        .unwrap();
    assert_eq!(rows.len(), 6);
    let merged = admin_json(
        &node.server,
        &["merge", &left.to_string(), &right.to_string()],
    )
    .unwrap();
    assert_eq!(merged["result"], "OK");
    assert_eq!(
        admin_json(&node.server, &["ranges"])
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // SIGTERM, then the same directory again: every write is there.
    drop(conn);
    assert!(
        node.server.terminate(Duration::from_secs(30)),
        "{}",
        node.server.stderr()
    );
    let data = node.dir.path().join("data").display().to_string();
    let args = |cluster: &str| -> Vec<String> {
        [
            "--data-dir",
            &data,
            "--listen",
            "127.0.0.1:0",
            "--cluster-id",
            cluster,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let restarted = ServerProcess::start(&args("1"), node.dir.path(), "again");
    let mut conn = restarted.redis();
    let v: Option<i64> = conn.get("key099").unwrap();
    assert_eq!(v, Some(99));
    drop(conn);
    drop(restarted);

    // Another cluster's directory is refused.
    let err = ServerProcess::try_start(&args("2"), node.dir.path(), "other")
        .err()
        .expect("another cluster's data dir must be refused");
    assert!(err.contains("cluster"), "{err}");
}

#[test]
fn auth_is_required_when_a_password_is_set() {
    let node = SingleNode::start(&["--password", "s3cret"]);
    let mut conn = node.server.redis();
    let err = conn.get::<_, Option<String>>("k").unwrap_err();
    assert!(err.to_string().contains("NOAUTH"), "{err}");
    let err = redis::cmd("AUTH")
        .arg("wrong")
        .query::<()>(&mut conn)
        .unwrap_err();
    assert!(err.to_string().contains("WRONGPASS"), "{err}");
    let _: () = redis::cmd("AUTH").arg("s3cret").query(&mut conn).unwrap();
    let _: () = conn.set("k", "v").unwrap();

    let client = redis::Client::open(format!("redis://:s3cret@{}/", node.server.resp)).unwrap();
    let mut authed = client.get_connection().unwrap();
    let v: String = authed.get("k").unwrap();
    assert_eq!(v, "v");
    let hello: Vec<redis::Value> = redis::cmd("HELLO")
        .arg("2")
        .arg("AUTH")
        .arg("default")
        .arg("s3cret")
        .query(&mut node.server.redis())
        .unwrap();
    assert_eq!(hello.len(), 14);

    let out = std::process::Command::new(BIN)
        .args([
            "admin",
            "--addr",
            &node.server.resp.to_string(),
            "--password",
            "s3cret",
            "status",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("ranges_leading"));
}

#[test]
fn invalid_config_fails_at_start_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[engine]\nheartbeat_ticks = 30\n", "heartbeat_ticks"),
        ("[engine]\ntick_ms = 0\n", "engine.tick_ms"),
        ("[server]\nlisten_port = 1\n", "listen_port"),
        ("[engine]\nread_mode = \"fast\"\n", "engine.read_mode"),
        (
            "[server]\nrequest_bytes_max = 10\n",
            "server.request_bytes_max",
        ),
    ];
    for (i, (text, field)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(
            &path,
            format!("data_dir = \"{}\"\n{text}", dir.path().join("d").display()),
        )
        .unwrap();
        let out = std::process::Command::new(BIN)
            .args(["server", "--config", &path.display().to_string()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains(field), "{field}: {stderr}");
    }
    let out = std::process::Command::new(BIN)
        .args(["server", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--config",
        "--data-dir",
        "--listen",
        "--metrics-listen",
        "--redirect",
    ] {
        assert!(help.contains(flag), "{flag} missing from help");
    }
}

//! The shipped configuration files are valid: `config/example.toml` (every
//! option) and `config/demo.toml`, checked by `trailkeep check` itself.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_trailkeep");

/// Every `{ env = "NAME" }` and `{ file = "/path" }` reference in `text`.
fn refs(text: &str, kind: &str) -> Vec<String> {
    let needle = format!("{kind} = \"");
    let mut out = Vec::new();
    for (i, _) in text.match_indices(&needle) {
        let rest = &text[i + needle.len()..];
        if let Some(end) = rest.find('"') {
            out.push(rest[..end].to_string());
        }
    }
    out
}

#[test]
fn example_config_is_valid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().display().to_string();
    let mut text = std::fs::read_to_string("config/example.toml").expect("config/example.toml");
    // Point every path at the temp dir, make every secret exist.
    for prefix in [
        "/var/run/secrets/",
        "/var/lib/trailkeep/",
        "/etc/trailkeep/",
    ] {
        text = text.replace(&format!("\"{prefix}"), &format!("\"{root}{prefix}"));
    }
    let key = trailkeep::sim::symphony::generate_rsa_key().expect("RSA key");
    for f in refs(&text, "file") {
        // Never touch the host outside the temp dir.
        assert!(
            f.starts_with(&root),
            "example config references {f} outside the known prefixes"
        );
        let p = std::path::Path::new(&f);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        let body = if f.ends_with(".pem") {
            key.private_pkcs8.clone()
        } else {
            "placeholder-secret".to_string()
        };
        std::fs::write(p, body).expect("write secret");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let file = dir.path().join("example.toml");
    std::fs::write(&file, &text).expect("write");
    let mut cmd = Command::new(BIN);
    cmd.args(["check", "-c"]).arg(&file);
    for name in refs(&text, "env") {
        // Webhook URLs kept as secrets must still be URLs.
        let value = if name.contains("URL") {
            "https://hooks.example.com/services/T0/B0/x"
        } else {
            "placeholder-secret"
        };
        cmd.env(name, value);
    }
    let out = cmd.output().expect("run check");
    assert!(
        out.status.success(),
        "config/example.toml does not pass `trailkeep check`:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn demo_config_is_valid_once_filled_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = std::fs::read_to_string("config/demo.toml")
        .expect("config/demo.toml")
        .replace("${DATA_DIR}", &dir.path().display().to_string())
        .replace("${METRICS_LISTEN}", "")
        .replace("${RINGCENTRAL_URL}", "http://127.0.0.1:1")
        .replace("${SYMPHONY_URL}", "http://127.0.0.1:2")
        .replace("${VBRICK_URL}", "http://127.0.0.1:3")
        .replace("${HEC_URL}", "http://127.0.0.1:4");
    let unfilled: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && l.contains("${"))
        .collect();
    assert!(
        unfilled.is_empty(),
        "unfilled placeholders in demo.toml: {unfilled:?}"
    );
    let key = trailkeep::sim::symphony::generate_rsa_key().expect("RSA key");
    for f in refs(&text, "file") {
        let p = std::path::Path::new(&f);
        assert!(
            p.starts_with(dir.path()),
            "demo config references {f} outside its data dir"
        );
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        let body = if f.ends_with(".pem") {
            key.private_pkcs8.clone()
        } else {
            "x".to_string()
        };
        std::fs::write(p, body).expect("write");
    }
    let file = dir.path().join("demo.toml");
    std::fs::write(&file, &text).expect("write");
    let out = Command::new(BIN)
        .args(["check", "-c"])
        .arg(&file)
        .output()
        .expect("run check");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

//! The config file: YAML whose keys are the long flag names. Its values are turned into flags
//! placed before the command line's own, so a flag given on the command line wins (clap keeps
//! the last occurrence), and keys whose `K8SLITE_*` variable is set are skipped so the
//! environment wins over the file too.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{Context, bail};

const DEFAULT_CONFIG: &str = "/etc/k8slite/config.yaml";

/// Find `--config` in the raw arguments (or `K8SLITE_CONFIG`); `explicit` is false for the
/// default path, which may be absent.
fn config_path(args: &[OsString]) -> (PathBuf, bool) {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if let Some(v) = s.strip_prefix("--config=") {
            return (PathBuf::from(v), true);
        }
        if s == "--config"
            && let Some(v) = it.next()
        {
            return (PathBuf::from(v), true);
        }
    }
    match std::env::var_os("K8SLITE_CONFIG") {
        Some(v) => (PathBuf::from(v), true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    }
}

fn env_name(key: &str) -> String {
    format!("K8SLITE_{}", key.replace('-', "_").to_ascii_uppercase())
}

fn scalar(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The command line with the config file's settings inserted after the subcommand. One file
/// serves both `server` and `agent`: keys that `known(subcommand, key)` rejects are skipped.
pub fn args_with_config_file(
    args: Vec<OsString>,
    known: &dyn Fn(&str, &str) -> bool,
) -> anyhow::Result<Vec<OsString>> {
    let Some(sub_pos) = args.iter().position(|a| a == "server" || a == "agent") else {
        return Ok(args);
    };
    let sub = args[sub_pos].to_string_lossy().into_owned();
    let (path, explicit) = config_path(&args);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => return Ok(args),
        Err(e) => return Err(e).with_context(|| format!("reading config file {}", path.display())),
    };
    if text.trim().is_empty() {
        return Ok(args);
    }
    let doc: serde_json::Value = serde_saphyr::from_str(&text)
        .with_context(|| format!("parsing config file {}", path.display()))?;
    if doc.is_null() {
        return Ok(args);
    }
    let Some(map) = doc.as_object() else {
        bail!(
            "config file {}: expected a mapping of flag names to values",
            path.display()
        );
    };
    let mut extra: Vec<OsString> = Vec::new();
    for (key, value) in map {
        if key == "config" || !known(&sub, key) {
            continue;
        }
        if std::env::var_os(env_name(key)).is_some() {
            continue;
        }
        match value {
            serde_json::Value::Bool(true) => extra.push(format!("--{key}").into()),
            serde_json::Value::Bool(false) | serde_json::Value::Null => {}
            serde_json::Value::Array(items) => {
                for it in items {
                    let s = scalar(it).with_context(|| {
                        format!(
                            "config file {}: {key}: list items must be scalars",
                            path.display()
                        )
                    })?;
                    extra.push(format!("--{key}={s}").into());
                }
            }
            other => {
                let s = scalar(other).with_context(|| {
                    format!("config file {}: {key}: expected a scalar", path.display())
                })?;
                extra.push(format!("--{key}={s}").into());
            }
        }
    }
    let mut out = args[..=sub_pos].to_vec();
    out.extend(extra);
    out.extend_from_slice(&args[sub_pos + 1..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_values_go_before_flags() {
        let dir = std::env::temp_dir().join(format!("k8slite-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let file = dir.join("config.yaml");
        std::fs::write(
            &file,
            "https-listen-port: 7443\ntls-san:\n  - a.example\n  - 10.0.0.9\ndisable-agent: true\n",
        )
        .expect("write");
        let args: Vec<OsString> = vec![
            "k8slite".into(),
            "server".into(),
            format!("--config={}", file.display()).into(),
            "--https-listen-port=8443".into(),
        ];
        let out = args_with_config_file(args, &|_, _| true).expect("merged");
        let out: Vec<String> = out
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let cfg_pos = out
            .iter()
            .position(|a| a == "--https-listen-port=7443")
            .expect("config value present");
        let flag_pos = out
            .iter()
            .position(|a| a == "--https-listen-port=8443")
            .expect("flag present");
        assert!(
            cfg_pos < flag_pos,
            "command-line flag must come last to win: {out:?}"
        );
        assert!(out.contains(&"--tls-san=a.example".to_string()));
        assert!(out.contains(&"--disable-agent".to_string()));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn explicit_missing_config_is_an_error() {
        let args: Vec<OsString> = vec![
            "k8slite".into(),
            "server".into(),
            "--config=/nonexistent/k8slite.yaml".into(),
        ];
        assert!(args_with_config_file(args, &|_, _| true).is_err());
    }
}

//! The README's first command analyses the real H100 trace shipped in `examples/`: it must
//! run on a machine without a GPU and say what the README says it says.

use std::process::Command;

#[test]
fn the_readmes_first_command_finds_the_first_request_pause_is_cpu_work() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let first = readme
        .lines()
        .find(|l| l.starts_with("cargo run "))
        .expect("the README opens with a cargo run command");
    let args: Vec<&str> = first
        .split_whitespace()
        .skip_while(|w| *w != "--")
        .skip(1)
        .collect();
    assert_eq!(args[0], "analyze", "{first}");
    let o = Command::new(env!("CARGO_BIN_EXE_flinch"))
        .current_dir(root)
        .args(&args)
        .arg("--json")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let spans = r["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 16);
    let first_span = &spans[0];
    assert_eq!(first_span["verdict"], "cpu-compute", "{first_span}");
    let d = first_span["duration_s"].as_f64().unwrap();
    assert!((d - 1.4834).abs() < 0.001, "{d}");
    assert!(readme.contains("1.48 s") && readme.contains("`cpu-compute`"));
}

#[test]
fn the_readmes_per_token_energy_is_what_analyze_says() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let cmd = readme
        .lines()
        .find(|l| l.starts_with("cargo run ") && l.contains("--from token --to token"))
        .expect("the README runs the per-token analysis");
    let args: Vec<&str> = cmd
        .split_whitespace()
        .skip_while(|w| *w != "--")
        .skip(1)
        .collect();
    let o = Command::new(env!("CARGO_BIN_EXE_flinch"))
        .current_dir(root)
        .args(&args)
        .arg("--json")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let a = &r["summary"]["aggregate"];
    assert_eq!(a["count"], 7600);
    let t = &a["devices"]["gpu0"]["active_energy_j"];
    let said = format!(
        "{:.3} J per token above idle, between {:.3} and {:.3} J",
        t["mean"].as_f64().unwrap(),
        t["mean_bound"][0].as_f64().unwrap(),
        t["mean_bound"][1].as_f64().unwrap()
    );
    assert!(readme.contains(&said), "the README should say {said:?}");
}

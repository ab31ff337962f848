//! Writes the monitoring kit (alert and recording rules, their promtool tests, Grafana
//! dashboards and provisioning, the Alertmanager routing example, and the local stack:
//! `compose.yaml` with the Prometheus, Loki, Alloy, Tempo and Collector configurations) for the
//! default `MonitoringConfig`.
//!
//! ```text
//! cargo run --example monitoring -- --out monitoring
//! cargo run --example monitoring -- --out /tmp/kit --service billing-api
//! ```
//!
//! The checked-in `monitoring/` directory is this example's output with no options besides
//! `--out`; a test fails when it differs from what the library generates.

use std::path::PathBuf;
use std::process::ExitCode;

use mercenary_obs::monitoring::{MonitoringConfig, write_to};

const USAGE: &str = "usage: monitoring --out DIR [--service NAME] [--runbook-base-url URL]";

fn main() -> ExitCode {
    let mut out: Option<PathBuf> = None;
    let mut config = MonitoringConfig::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| match args.next() {
            Some(v) => Ok(v),
            None => Err(format!("{name} needs a value\n{USAGE}")),
        };
        let parsed = match arg.as_str() {
            "--out" => value("--out").map(|v| out = Some(PathBuf::from(v))),
            "--service" => value("--service").map(|v| config.service = v),
            "--runbook-base-url" => {
                value("--runbook-base-url").map(|v| config.runbook_base_url = v)
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => Err(format!("unknown argument {other:?}\n{USAGE}")),
        };
        if let Err(message) = parsed {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    }
    let Some(out) = out else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    match write_to(&config, &out) {
        Ok(paths) => {
            for p in paths {
                println!("wrote {}", p.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("monitoring: {e}");
            ExitCode::FAILURE
        }
    }
}

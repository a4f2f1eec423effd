//! `trailkeep sim`: serve the vendor simulators on chosen addresses.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use serde::Deserialize;

use crate::sim;

#[derive(clap::Args, Debug)]
pub struct SimArgs {
    /// TOML file of simulator knobs: a `[ringcentral]` table with the same
    /// keys as the simulator's Config (limits, window, records, faults).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address of the RingCentral simulator.
    #[arg(long, default_value = "127.0.0.1:18080")]
    pub ringcentral: SocketAddr,
    /// Address of the Symphony simulator (pod, key manager and agent).
    #[arg(long, default_value = "127.0.0.1:18081")]
    pub symphony: SocketAddr,
    /// Address of the Vbrick Rev simulator.
    #[arg(long, default_value = "127.0.0.1:18082")]
    pub vbrick: SocketAddr,
    /// Address of the Splunk HEC simulator.
    #[arg(long, default_value = "127.0.0.1:18088")]
    pub hec: SocketAddr,
    /// Where the Symphony simulator writes the private key of its service
    /// account `demo-bot` (the public key is registered with it).
    #[arg(long, default_value = "./sim-secrets")]
    pub secrets_dir: PathBuf,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SimFile {
    #[serde(default)]
    ringcentral: Option<sim::ringcentral::Config>,
    #[serde(default)]
    symphony: Option<sim::symphony::Config>,
    #[serde(default)]
    vbrick: Option<sim::vbrick::Config>,
    #[serde(default)]
    hec: Option<sim::hec::Config>,
}

pub async fn sim(args: SimArgs) -> ExitCode {
    let file: SimFile = match &args.config {
        None => SimFile::default(),
        Some(p) => match std::fs::read_to_string(p)
            .map_err(|e| e.to_string())
            .and_then(|t| toml::from_str(&t).map_err(|e| e.to_string()))
        {
            Ok(f) => f,
            Err(e) => {
                eprintln!("trailkeep sim: {}: {e}", p.display());
                return ExitCode::from(super::EXIT_CONFIG);
            }
        },
    };
    let rc_cfg = file
        .ringcentral
        .unwrap_or_else(|| sim::ringcentral::Config {
            initial_records: 2_000,
            ..Default::default()
        });
    let (rc, _rc_handle) = match sim::ringcentral::start_on(rc_cfg, args.ringcentral).await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("trailkeep sim: cannot listen on {}: {e}", args.ringcentral);
            return ExitCode::FAILURE;
        }
    };
    println!("RingCentral simulator on http://{}  (client_id {}, admin: /_sim/counters /_sim/records /_sim/faults)", _rc_handle.addr, rc.cfg.client_id);
    let sy_cfg = file.symphony.unwrap_or_else(|| sim::symphony::Config {
        seed_items: 500,
        seed_days: 60,
        ..Default::default()
    });
    let (sy, _sy_handle) = match sim::symphony::start_on(sy_cfg, args.symphony).await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("trailkeep sim: cannot listen on {}: {e}", args.symphony);
            return ExitCode::FAILURE;
        }
    };
    match sim::symphony::provision_account(&sy, "demo-bot", &args.secrets_dir) {
        Ok(p) => println!(
            "Symphony simulator on http://{}  (service account demo-bot, private key {})",
            _sy_handle.addr,
            p.display()
        ),
        Err(e) => {
            eprintln!("trailkeep sim: cannot provision the Symphony account: {e}");
            return ExitCode::FAILURE;
        }
    }
    let vb_cfg = file.vbrick.unwrap_or_else(|| sim::vbrick::Config {
        seed_rows: 1_000,
        ..Default::default()
    });
    let (vb, _vb_handle) = match sim::vbrick::start_on(vb_cfg, args.vbrick).await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("trailkeep sim: cannot listen on {}: {e}", args.vbrick);
            return ExitCode::FAILURE;
        }
    };
    println!(
        "Vbrick Rev simulator on http://{}  (account {}, api key {}, secret in the sim config)",
        _vb_handle.addr,
        vb.config().account_id,
        vb.config().api_key
    );
    let hec_cfg = file.hec.unwrap_or_default();
    let tokens: Vec<String> = hec_cfg
        .tokens
        .iter()
        .map(|t| {
            format!(
                "{} (ack {}{})",
                t.token,
                if t.use_ack { "on" } else { "off" },
                if t.disabled { ", disabled" } else { "" }
            )
        })
        .collect();
    let _hec_handle = match sim::hec::start_on(hec_cfg, args.hec).await {
        Ok((_, h)) => h,
        Err(e) => {
            eprintln!("trailkeep sim: cannot listen on {}: {e}", args.hec);
            return ExitCode::FAILURE;
        }
    };
    println!(
        "Splunk HEC simulator on http://{}  (tokens: {})",
        _hec_handle.addr,
        tokens.join(", ")
    );
    println!("Ctrl-C to stop.");
    let _ = tokio::signal::ctrl_c().await;
    ExitCode::SUCCESS
}

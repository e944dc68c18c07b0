//! The one integration test binary: fixture replay, engine scenarios, decoder properties,
//! the dhcproto cross-check, the CLI contract and the attack suite (`attack_*`).

mod attack_files;
mod attack_forcerenew;
mod attack_hooks;
mod attack_inputs;
mod attack_serve;
mod attack_wire;
mod cli;
mod common;
mod complete_log;
mod crosscheck;
mod e2e;
mod e2e_channel;
mod e2e_dhcp;
mod e2e_ed25519;
mod e2e_logs;
mod e2e_status;
mod e2e_xid;
mod examples;
mod fleet;
mod golden;
mod heap;
mod hooks_examples;
mod house;
mod kea_leases;
mod lab;
mod netns;
mod props;
mod scenarios;
mod serve;
mod service;
mod sim;
mod sim_fleet;
mod sim_scenarios;
mod units;

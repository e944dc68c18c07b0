//! The decision log is the complete record (DESIGN §3, issue 6): replaying every fixture, the
//! actions the applier received are exactly the actions listed in the decision lines, in order.

use crate::common::fixtures;
use ipsyncd::config::Config;
use ipsyncd::engine::input::DecodeContext;
use ipsyncd::engine::{Action, Engine, State};
use ipsyncd::shell::applier::Recorder;
use ipsyncd::shell::pipeline;
use ipsyncd::shell::source::PcapSource;
use ipsyncd::shell::worker::Timing;
use parking_lot::Mutex;
use std::sync::Arc;

#[test]
fn r6_applier_receives_exactly_the_logged_actions_in_order() {
    let mut checked = 0;
    for (name, cap, cfg_path) in fixtures() {
        let cfg = Config::load(&cfg_path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mac = cfg.terminal_mac().expect("mac").expect("fixtures name terminal.mac");
        let ecfg = cfg.engine_config(mac).expect("engine config");
        let ctx = DecodeContext { mac, port: ecfg.port, server_option: ecfg.server_option };
        let engine = Engine::new(ecfg, State::default(), 0);
        let logged: Arc<Mutex<Vec<Action>>> = Arc::default();
        let received: Arc<Mutex<Vec<Action>>> = Arc::default();
        let sink_log = Arc::clone(&logged);
        let sink = Box::new(move |d: &ipsyncd::engine::Decision, _| sink_log.lock().extend(d.actions.iter().cloned()));
        let recorder = Recorder { log: Some(Arc::clone(&received)), ..Recorder::default() };
        let source = PcapSource::open(&cap).expect("capture");
        let s = pipeline::run(
            Box::new(source),
            ctx,
            engine,
            Box::new(recorder),
            sink,
            Timing::Replay,
            pipeline::Extras::default(),
        );
        assert!(s.source_error.is_none(), "{name}");
        let (logged, received) = (logged.lock().clone(), received.lock().clone());
        assert_eq!(received, logged, "{name}: the applier got actions the log does not list, or in another order");
        checked += logged.len();
    }
    assert!(checked > 100, "only {checked} actions across the fixtures");
}

//! Wires source → capture thread → worker thread → applier thread with bounded channels.
//!
//! Contract: one pipeline for live and replay. The capture thread decodes borrowed views and
//! sends only owned [`Inbound`] values; no borrowed view crosses a thread. It sends them in
//! batches: the first frame it waited for plus whatever the source has at hand without waiting
//! (the rest of a ring block), so a flood costs one hand-off per block, not per frame, and a
//! lone frame is never held back. Channels are bounded (at most [`CAPTURE_QUEUE`] batches of
//! [`CAPTURE_BATCH`] frames), so a flood costs CPU, not memory: replay blocks (lossless), a live
//! source drops and counts.

use super::applier::Applier;
use super::source::{FrameSource, SourceError};
use super::worker::{
    run_applier, ApplierMsg, CaptureMsg, Control, DecisionSink, FrameTx, StatusSink, Timing, Watchdog, Worker,
};
use crate::engine::input::{decode_frame_from, DecodeContext, Decoded};
use crate::engine::{ActionResult, Counters, Engine};
use crossbeam_channel::bounded;
use std::collections::BTreeMap;
use std::thread;

/// Frames per hand-off to the worker, and hand-offs queued: 1024 frames at most in flight.
pub const CAPTURE_BATCH: usize = 128;
pub const CAPTURE_QUEUE: usize = 8;
const APPLIER_QUEUE: usize = 1024;

/// What a run saw, for `replay`'s exit code and for `status`.
#[derive(Default)]
pub struct Summary {
    pub frames: u64,
    pub filtered: u64,
    pub capture_drops: BTreeMap<&'static str, u64>,
    pub counters: Counters,
    pub source_error: Option<SourceError>,
    /// How many times the state could not be written (replay exits 1 then: DESIGN §6).
    pub persist_failures: u64,
    pub engine: Option<Engine>,
}

/// Optional live extras: a status sink and a control channel (replay passes `Extras::default()`).
#[derive(Default)]
pub struct Extras {
    pub status: Option<StatusSink>,
    pub control: Option<crossbeam_channel::Receiver<Control>>,
    /// Live: the worker sends frames itself (worker.rs says why).
    pub frames: Option<FrameTx>,
    /// Live under systemd's watchdog: pinged from the worker's loop.
    pub watchdog: Option<Watchdog>,
}

pub fn run(
    mut source: Box<dyn FrameSource>,
    ctx: DecodeContext,
    engine: Engine,
    applier: Box<dyn Applier>,
    sink: DecisionSink,
    timing: Timing,
    extras: Extras,
) -> Summary {
    let (cap_tx, cap_rx) = bounded::<CaptureMsg>(CAPTURE_QUEUE);
    let (app_tx, app_rx) = bounded::<ApplierMsg>(APPLIER_QUEUE);
    // Unbounded on purpose: results are at most one per action plus kernel events, and a bounded
    // queue here could deadlock against a full action queue.
    let (res_tx, res_rx) = crossbeam_channel::unbounded::<ActionResult>();

    let capture = thread::Builder::new().name("capture".into()).spawn(move || {
        let mut s = Summary::default();
        let mut last = None;
        let mut ended = false;
        while !ended {
            let mut batch = Vec::new();
            // Wait for one frame, then take only what is at hand.
            let mut waited = false;
            while batch.len() < CAPTURE_BATCH {
                let next = if waited { source.next_ready() } else { source.next_frame() };
                let f = match next {
                    Ok(Some(f)) => f,
                    Ok(None) => {
                        ended = !waited;
                        break;
                    }
                    Err(e) => {
                        s.source_error = Some(e);
                        ended = true;
                        break;
                    }
                };
                waited = true;
                s.frames += 1;
                last = Some(f.ts);
                match decode_frame_from(Some(f.index), f.bytes, f.csum, f.dir, &ctx) {
                    Decoded::Filtered => s.filtered += 1,
                    Decoded::Dropped(why) => *s.capture_drops.entry(why).or_default() += 1,
                    Decoded::Inbound(i) => batch.push((f.ts, i)),
                }
            }
            if !batch.is_empty() && cap_tx.send(CaptureMsg::Frames(batch)).is_err() {
                break;
            }
        }
        let _ = cap_tx.send(CaptureMsg::End(last));
        s
    });
    let frames = extras.frames.map(|tx| (tx, res_tx.clone()));
    let applier_thread =
        thread::Builder::new().name("applier".into()).spawn(move || run_applier(applier, app_rx, res_tx));
    let control = extras.control.unwrap_or_else(crossbeam_channel::never);
    let worker = Worker {
        engine,
        timing,
        to_applier: app_tx,
        results: res_rx,
        sink,
        status: extras.status,
        control,
        frames,
        status_again: None,
        watchdog: extras.watchdog,
    };
    let worker_thread = thread::Builder::new().name("worker".into()).spawn(move || worker.run(cap_rx));

    let mut summary = match capture.map(|h| h.join()) {
        Ok(Ok(s)) => s,
        _ => {
            log::error!("capture thread failed");
            Summary::default()
        }
    };
    if let Ok(Ok(engine)) = worker_thread.map(|h| h.join()) {
        summary.counters = engine.counters().clone();
        summary.engine = Some(engine);
    } else {
        log::error!("worker thread failed");
    }
    // The worker dropped its sender: the applier drains what is queued and exits.
    match applier_thread.map(|h| h.join()) {
        Ok(Ok((_, persist_failures))) => summary.persist_failures = persist_failures,
        _ => log::error!("applier thread failed"),
    }
    summary
}

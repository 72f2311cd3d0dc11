//! The scheduler: one owner task places pending sessions on agents and starts them.
//!
//! It wakes when a session is enqueued, when one ends (freed capacity), on agent events,
//! and every `scheduler.sweep-interval` as a backstop. Each pass reads the queue and the
//! ALIVE agents, decides with [`plan`], and in the same write transaction moves the placed
//! sessions to PREPARING and adds their slots to their agents' occupied slots; so however
//! many creates arrive at once, no agent is ever given more than it has. The placed
//! sessions are then started over the agent RPC, each in its own task.
//!
//! **The queue rule.** Sessions are considered in arrival order. One that does not fit on
//! any agent right now does not block those behind it (backfilling), unless it has waited
//! longer than `scheduler.hold-after`: from then on nothing behind it is placed before it,
//! so capacity freed by ending sessions accumulates for it instead of being taken by
//! smaller sessions that arrived later. A session larger than every ALIVE agent's whole
//! capacity never holds the queue (nothing that ends could make room for it).

use super::sessions::{self, parse_slots, Started};
use super::Registry;
use crate::agent::AgentError;
use crate::config::Strategy;
use crate::domain::{
    ImageRegistry, KernelCreation, KernelSpec, KernelStatus, RegistryCredentials, ResourceSlots,
};
use crate::store::scheduling::{self, StartSpec};
use crate::store::{now_text, StoreError};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use std::sync::Arc;
use std::time::Duration;

/// A session waiting in the queue.
#[derive(Debug, Clone)]
pub struct Pending {
    pub kernel_id: String,
    pub sess_id: String,
    pub requested: ResourceSlots,
    pub waited: Duration,
}

/// An ALIVE agent's capacity.
#[derive(Debug, Clone)]
pub struct Capacity {
    pub id: String,
    pub available: ResourceSlots,
    pub occupied: ResourceSlots,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Place { kernel_id: String, agent: String },
    Wait { kernel_id: String, reason: String },
}

/// The slots of one pass as vectors over the same slot names: what `plan` compares for every
/// agent and every queued session (map lookups and decimal division there cost more than
/// the rest of a pass with 100 agents).
struct Slots {
    names: Vec<String>,
}

impl Slots {
    fn of(queue: &[Pending], agents: &[Capacity]) -> Slots {
        let mut names: Vec<String> = Vec::new();
        let all = agents
            .iter()
            .flat_map(|a| a.available.iter().chain(a.occupied.iter()))
            .chain(queue.iter().flat_map(|p| p.requested.iter()));
        for (slot, _) in all {
            if !names.iter().any(|n| n == slot) {
                names.push(slot.to_owned());
            }
        }
        Slots { names }
    }

    fn vector(&self, slots: &ResourceSlots) -> Vec<Decimal> {
        self.names.iter().map(|n| slots.get(n)).collect()
    }

    fn map(&self, v: &[Decimal]) -> ResourceSlots {
        let mut out = ResourceSlots::new();
        for (n, q) in self.names.iter().zip(v) {
            out.set(n.clone(), *q);
        }
        out
    }
}

/// An agent during a pass: what is left, exactly and as floats for scoring.
struct Room {
    left: Vec<Decimal>,
    left_f: Vec<f64>,
    /// `(slot index, 1 / capacity)` of each slot the agent has some of.
    inverse_capacity: Vec<(usize, f64)>,
}

impl Room {
    fn new(slots: &Slots, a: &Capacity) -> Room {
        let left = slots.vector(&a.available.sub(&a.occupied));
        let capacity = slots.vector(&a.available);
        Room {
            left_f: left.iter().map(|d| d.to_f64().unwrap_or(0.0)).collect(),
            left,
            inverse_capacity: capacity
                .iter()
                .enumerate()
                .filter(|(_, c)| **c > Decimal::ZERO)
                .map(|(j, c)| (j, 1.0 / c.to_f64().unwrap_or(f64::INFINITY)))
                .collect(),
        }
    }

    fn fits(&self, wanted: &[Decimal]) -> bool {
        wanted.iter().zip(&self.left).all(|(w, l)| w <= l)
    }

    /// How free the agent would be with `taken_f` more in use: the mean over its slots of
    /// the free fraction.
    fn free_fraction(&self, taken_f: &[f64]) -> f64 {
        if self.inverse_capacity.is_empty() {
            return 0.0;
        }
        let sum: f64 = self
            .inverse_capacity
            .iter()
            .map(|&(j, inverse)| (self.left_f[j] - taken_f[j]) * inverse)
            .sum();
        sum / self.inverse_capacity.len() as f64
    }

    fn take(&mut self, wanted: &[Decimal], wanted_f: &[f64]) {
        for j in 0..self.left.len() {
            self.left[j] -= wanted[j];
            self.left_f[j] -= wanted_f[j];
        }
    }
}

/// Decides, for the queue in arrival order, which sessions go where now and why the others
/// wait (see the module documentation for the rule).
pub fn plan(
    queue: &[Pending],
    agents: &[Capacity],
    strategy: Strategy,
    hold_after: Duration,
) -> Vec<Decision> {
    let slots = Slots::of(queue, agents);
    let mut rooms: Vec<Room> = agents.iter().map(|a| Room::new(&slots, a)).collect();
    let nothing = vec![0.0; slots.names.len()];
    let mut out = Vec::with_capacity(queue.len());
    let mut held_by: Option<&str> = None;
    for p in queue {
        if let Some(holder) = held_by {
            out.push(Decision::Wait {
                kernel_id: p.kernel_id.clone(),
                reason: format!("queued behind session {holder}, which has waited longest"),
            });
            continue;
        }
        let wanted = slots.vector(&p.requested);
        let wanted_f: Vec<f64> = wanted.iter().map(|d| d.to_f64().unwrap_or(0.0)).collect();
        // Each fitting agent scored once by how free it would be; ties go to the lower id.
        let fitting = rooms
            .iter()
            .enumerate()
            .filter(|(_, r)| r.fits(&wanted))
            .map(|(i, r)| (r.free_fraction(&wanted_f), i));
        let chosen = match strategy {
            Strategy::Dispersed => fitting.max_by(|(fa, a), (fb, b)| {
                fa.total_cmp(fb)
                    .then_with(|| agents[*b].id.cmp(&agents[*a].id))
            }),
            Strategy::Concentrated => fitting.min_by(|(fa, a), (fb, b)| {
                fa.total_cmp(fb)
                    .then_with(|| agents[*a].id.cmp(&agents[*b].id))
            }),
        }
        .map(|(_, i)| i);
        if let Some(i) = chosen {
            rooms[i].take(&wanted, &wanted_f);
            out.push(Decision::Place {
                kernel_id: p.kernel_id.clone(),
                agent: agents[i].id.clone(),
            });
            continue;
        }
        let could_ever_fit = agents.iter().any(|a| p.requested.fits_in(&a.available));
        let reason = if agents.is_empty() {
            "waiting for an agent: none is alive".to_owned()
        } else if !could_ever_fit {
            format!(
                "no agent is large enough for {} (the largest has {})",
                p.requested.humanize(),
                largest(agents).humanize()
            )
        } else {
            let best = rooms
                .iter()
                .max_by(|a, b| {
                    a.free_fraction(&nothing)
                        .total_cmp(&b.free_fraction(&nothing))
                })
                .map(|r| slots.map(&r.left))
                .unwrap_or_default();
            format!(
                "waiting for capacity: needs {}; the freest agent has {} left",
                p.requested.humanize(),
                only_requested(&best, &p.requested).humanize()
            )
        };
        if could_ever_fit && p.waited >= hold_after {
            held_by = Some(&p.sess_id);
        }
        out.push(Decision::Wait {
            kernel_id: p.kernel_id.clone(),
            reason,
        });
    }
    out
}

fn largest(agents: &[Capacity]) -> ResourceSlots {
    agents
        .iter()
        .max_by_key(|a| a.available.iter().map(|(_, v)| v).sum::<Decimal>())
        .map(|a| a.available.clone())
        .unwrap_or_default()
}

fn only_requested(slots: &ResourceSlots, requested: &ResourceSlots) -> ResourceSlots {
    let mut out = ResourceSlots::new();
    for (k, _) in requested.iter() {
        out.set(k, slots.get(k).max(Decimal::ZERO));
    }
    out
}

/// A session placed by a pass, to be started.
struct Placed {
    kernel_id: String,
    sess_id: String,
    access_key: String,
    agent_addr: String,
    /// What it was placed with (its stored slots, as the pass read them).
    slots: ResourceSlots,
    /// What its kernel is created from, read in the pass's transaction.
    start: StartSpec,
}

fn age(created_at: &str) -> Duration {
    chrono::DateTime::parse_from_rfc3339(created_at)
        .ok()
        .and_then(|t| {
            (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
                .to_std()
                .ok()
        })
        .unwrap_or_default()
}

/// [`parse_slots`], remembering what it parsed: a pass reads every ALIVE agent's slots
/// and the whole queue's, which are mostly the same few texts from pass to pass. Passes run
/// on the store's writer thread, so the memory is that thread's.
fn parsed(text: &str) -> Result<ResourceSlots, StoreError> {
    thread_local! {
        static PARSED: std::cell::RefCell<std::collections::HashMap<String, ResourceSlots>> =
            Default::default();
    }
    PARSED.with_borrow_mut(|memo| {
        if let Some(slots) = memo.get(text) {
            return Ok(slots.clone());
        }
        let slots = parse_slots(text)?;
        if memo.len() >= 4096 {
            memo.clear();
        }
        memo.insert(text.to_owned(), slots.clone());
        Ok(slots)
    })
}

/// One scheduling pass: decide and reserve in one transaction, then start what was placed.
pub async fn pass(reg: &Arc<Registry>) -> Result<usize, StoreError> {
    let strategy = reg.config.scheduler.strategy;
    let hold_after = Duration::from_secs_f64(reg.config.scheduler.hold_after);
    let placed = reg
        .store
        .write(move |tx| decide(tx, strategy, hold_after))
        .await?;
    let n = placed.len();
    launch(reg, placed);
    Ok(n)
}

/// The decisions of a pass, taken and recorded in `tx`: the placed sessions are PREPARING
/// on their agents, with their slots counted there; those that wait say why.
fn decide(
    tx: &rusqlite::Connection,
    strategy: Strategy,
    hold_after: Duration,
) -> Result<Vec<Placed>, StoreError> {
    let mut queue = Vec::new();
    let mut info = std::collections::HashMap::new();
    for row in scheduling::queue(tx)? {
        queue.push(Pending {
            kernel_id: row.id.clone(),
            sess_id: row.sess_id.clone(),
            requested: parsed(&row.occupied_slots)?,
            waited: age(&row.created_at),
        });
        info.insert(row.id, (row.sess_id, row.access_key, row.status_info));
    }
    if queue.is_empty() {
        return Ok(Vec::new());
    }
    let mut agents = Vec::new();
    let mut addrs = std::collections::HashMap::new();
    for a in scheduling::alive_agents(tx)? {
        agents.push(Capacity {
            id: a.id.clone(),
            available: parsed(&a.available_slots)?,
            occupied: parsed(&a.occupied_slots)?,
        });
        addrs.insert(a.id, a.addr);
    }
    let now = now_text();
    let mut placed = Vec::new();
    for d in plan(&queue, &agents, strategy, hold_after) {
        match d {
            Decision::Place { kernel_id, agent } => {
                let Some(p) = queue.iter().find(|p| p.kernel_id == kernel_id) else {
                    continue;
                };
                let addr = addrs.get(&agent).cloned().unwrap_or_default();
                scheduling::place(tx, &kernel_id, &agent, &addr, &p.requested, &now)?;
                let (sess_id, access_key, _) = info.remove(&kernel_id).unwrap_or_default();
                let start = scheduling::start_spec(tx, &kernel_id)?;
                placed.push(Placed {
                    kernel_id,
                    sess_id,
                    access_key,
                    agent_addr: addr,
                    slots: p.requested.clone(),
                    start,
                });
            }
            Decision::Wait { kernel_id, reason } => {
                let unchanged =
                    info.get(&kernel_id).and_then(|i| i.2.as_deref()) == Some(reason.as_str());
                if !unchanged {
                    scheduling::note_wait(tx, &kernel_id, &reason)?;
                }
            }
        }
    }
    Ok(placed)
}

/// Announces the sessions a committed pass placed and starts each in a task of its own.
fn launch(reg: &Arc<Registry>, placed: Vec<Placed>) {
    for p in placed {
        reg.emit(super::SessionEvent {
            name: "session_preparing",
            sess_id: p.sess_id.clone(),
            kernel_id: p.kernel_id.clone(),
            access_key: p.access_key.clone(),
            status: KernelStatus::Preparing,
            reason: None,
        });
        tokio::spawn(start(reg.clone(), p));
    }
}

/// Why a placed session could not be started; its text becomes the session's
/// `creation-failed: ...` reason.
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Registries(#[from] crate::images::scan::ScanError),
    #[error("{0}")]
    Agent(#[from] AgentError),
}

/// What the agent is asked to create: the placed session's spec and slots, with the
/// registry its image comes from (and that registry's credentials, when it has some).
async fn kernel_creation(reg: &Registry, p: &Placed) -> Result<KernelCreation, StartError> {
    let session = p.start.session.clone().map_err(StartError::Config)?;
    let registries = crate::images::scan::registries(reg.shared.as_ref()).await?;
    let mut registry = ImageRegistry {
        name: p.start.registry.clone(),
        ..Default::default()
    };
    if let Some(r) = registries.iter().find(|r| r.name == p.start.registry) {
        registry.url = r.url.clone();
        if let (Some(username), Some(password)) = (&r.username, &r.password) {
            registry.credentials = Some(RegistryCredentials {
                username: username.clone(),
                password: password.clone(),
            });
        }
    }
    Ok(KernelCreation {
        spec: KernelSpec {
            image: p.start.image.clone(),
            slots: p.slots.clone(),
            environ: session.environ,
            mounts: session.mounts,
        },
        registry,
        idle_timeout: p.start.idle_timeout,
    })
}

fn host_of(addr: &str) -> String {
    let rest = addr.split("://").nth(1).unwrap_or(addr);
    rest.rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(rest)
        .to_owned()
}

/// Starts a placed session on its agent and records the outcome.
async fn start(owner: Arc<Registry>, p: Placed) {
    let reg = &*owner;
    let outcome = async {
        let creation = kernel_creation(reg, &p).await?;
        let client = reg.agent(&p.agent_addr).await?;
        let created = client
            .create_kernel_within(
                &p.kernel_id,
                &creation,
                Duration::from_secs_f64(reg.config.scheduler.agent_create_timeout),
            )
            .await?;
        Ok::<_, StartError>((client, created))
    }
    .await;
    match outcome {
        Ok((client, created)) => {
            let started = Started {
                container_id: created.container_id,
                kernel_host: host_of(&p.agent_addr),
                service_ports: created.service_ports,
            };
            match sessions::mark_running(reg, &reg.store, &p.kernel_id, started).await {
                Ok(true) => {}
                Ok(false) => {
                    // Destroyed (or failed) while it was being created.
                    let last = client
                        .destroy_kernel(&p.kernel_id, "user-requested")
                        .await
                        .ok()
                        .flatten();
                    let _ = sessions::mark_terminated(
                        reg,
                        &reg.store,
                        &p.kernel_id,
                        "user-requested",
                        last,
                    )
                    .await;
                }
                Err(e) => tracing::error!("cannot record that {} started: {e}", p.sess_id),
            }
        }
        Err(e) => {
            tracing::warn!("session {} could not be created: {e}", p.sess_id);
            let mut reason = format!("creation-failed: {e}");
            reason.truncate(1000);
            if let Err(e) =
                sessions::mark_terminated(reg, &reg.store, &p.kernel_id, &reason, None).await
            {
                tracing::error!("cannot record that {} failed: {e}", p.sess_id);
            }
        }
    }
}

/// The owner task, until `stop`. Sessions are placed in the commit that queues them: the
/// store runs [`decide`] at the end of every batch with a queued session in it (see
/// [`sessions::enqueue`]), and this task launches what that placed. It also runs a pass of
/// its own on every wake-up (capacity freed or added) and every sweep interval, for the
/// sessions that had to wait.
pub async fn run(reg: Arc<Registry>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let strategy = reg.config.scheduler.strategy;
    let hold_after = Duration::from_secs_f64(reg.config.scheduler.hold_after);
    let (placed_tx, mut placed_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<Placed>>();
    reg.store.set_batch_hook(Some(Box::new(move |tx| {
        let placed = decide(tx, strategy, hold_after)?;
        let to_launch = placed_tx.clone();
        Ok(Box::new(move |committed: bool| {
            if committed && !placed.is_empty() {
                let _ = to_launch.send(placed);
            }
        }))
    })));
    // The first tick comes at once: a pass for whatever was queued before the hook was in
    // place. Later ones also place what a failed hook left queued.
    let mut sweep =
        tokio::time::interval(Duration::from_secs_f64(reg.config.scheduler.sweep_interval));
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            Some(placed) = placed_rx.recv() => {
                launch(&reg, placed);
                continue;
            }
            _ = reg.wake.notified() => {}
            _ = sweep.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        if let Err(e) = pass(&reg).await {
            tracing::warn!("scheduling pass failed: {e}");
        }
    }
    reg.store.set_batch_hook(None);
    // Sessions the last batches placed are started still (their agents are told).
    placed_rx.close();
    while let Some(placed) = placed_rx.recv().await {
        launch(&reg, placed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn slots(v: Value) -> ResourceSlots {
        ResourceSlots::from_json(&v).unwrap()
    }

    fn pending(id: &str, cpu: u32, waited: u64) -> Pending {
        Pending {
            kernel_id: id.into(),
            sess_id: format!("s-{id}"),
            requested: slots(json!({"cpu": cpu, "mem": "1g"})),
            waited: Duration::from_secs(waited),
        }
    }

    fn agent(id: &str, cpu: u32, used: u32) -> Capacity {
        Capacity {
            id: id.into(),
            available: slots(json!({"cpu": cpu, "mem": "16g"})),
            occupied: slots(json!({"cpu": used, "mem": "0"})),
        }
    }

    fn placed(d: &[Decision]) -> Vec<(String, String)> {
        d.iter()
            .filter_map(|d| match d {
                Decision::Place { kernel_id, agent } => Some((kernel_id.clone(), agent.clone())),
                _ => None,
            })
            .collect()
    }

    const HOLD: Duration = Duration::from_secs(30);

    #[test]
    fn never_places_more_than_an_agent_has() {
        let queue: Vec<_> = (0..50).map(|i| pending(&i.to_string(), 1, 0)).collect();
        let d = plan(&queue, &[agent("a", 10, 0)], Strategy::Dispersed, HOLD);
        assert_eq!(placed(&d).len(), 10);
        // The first ten in arrival order.
        assert_eq!(placed(&d)[9].0, "9");
        match &d[10] {
            Decision::Wait { reason, .. } => {
                assert!(reason.starts_with("waiting for capacity"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn dispersed_spreads_and_concentrated_packs() {
        let agents = [agent("a", 8, 0), agent("b", 8, 4)];
        let q = [pending("1", 1, 0)];
        assert_eq!(
            placed(&plan(&q, &agents, Strategy::Dispersed, HOLD))[0].1,
            "a"
        );
        assert_eq!(
            placed(&plan(&q, &agents, Strategy::Concentrated, HOLD))[0].1,
            "b"
        );
        let q: Vec<_> = (0..4).map(|i| pending(&i.to_string(), 1, 0)).collect();
        let d = plan(
            &q,
            &[agent("a", 8, 0), agent("b", 8, 0)],
            Strategy::Dispersed,
            HOLD,
        );
        let on_a = placed(&d).iter().filter(|(_, a)| a == "a").count();
        assert_eq!(on_a, 2);
    }

    #[test]
    fn small_sessions_pass_a_large_one_until_it_has_waited_long_enough() {
        let agents = [agent("a", 4, 2)];
        // Fresh: the 4-cpu session waits, the 1-cpu one behind it is placed.
        let q = [pending("big", 4, 1), pending("small", 1, 0)];
        assert_eq!(
            placed(&plan(&q, &agents, Strategy::Dispersed, HOLD)),
            [("small".to_owned(), "a".to_owned())]
        );
        // Waited past hold-after: nothing behind it is placed, and the reason says why.
        let q = [pending("big", 4, 31), pending("small", 1, 0)];
        let d = plan(&q, &agents, Strategy::Dispersed, HOLD);
        assert!(placed(&d).is_empty());
        match &d[1] {
            Decision::Wait { reason, .. } => assert!(reason.contains("s-big"), "{reason}"),
            other => panic!("{other:?}"),
        }
        // Once capacity frees up, it goes first.
        let d = plan(&q, &[agent("a", 4, 0)], Strategy::Dispersed, HOLD);
        assert_eq!(placed(&d), [("big".to_owned(), "a".to_owned())]);
    }

    #[test]
    fn a_session_larger_than_any_agent_never_holds_the_queue() {
        let q = [pending("huge", 64, 3600), pending("small", 1, 0)];
        let d = plan(&q, &[agent("a", 4, 0)], Strategy::Dispersed, HOLD);
        assert_eq!(placed(&d), [("small".to_owned(), "a".to_owned())]);
        match &d[0] {
            Decision::Wait { reason, .. } => {
                assert!(reason.contains("no agent is large enough"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        let d = plan(&q[..1], &[], Strategy::Dispersed, HOLD);
        assert!(matches!(&d[0], Decision::Wait { reason, .. } if reason.contains("none is alive")));
    }
}

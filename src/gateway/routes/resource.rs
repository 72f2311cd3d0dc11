//! `/resource`: resource presets, and what the caller can still allocate.

use super::config::known_slots;
use crate::domain::{AgentStatus, DefaultForUnspecified, ResourceSlots};
use crate::gateway::error::ApiError;
use crate::gateway::router::{ok_json, Ctx};
use crate::registry::sessions::parse_slots;
use crate::server::App;
use rust_decimal::Decimal;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use warp::http::Response;
use warp::hyper::Body;

type Reply = Result<Response<Body>, ApiError>;

/// Slots where `None` is unlimited.
type Limits = Vec<(String, Option<Decimal>)>;

fn limits_json(l: &Limits) -> Value {
    Value::Object(
        l.iter()
            .map(|(k, v)| {
                let s = v
                    .map(|d| d.to_string())
                    .unwrap_or_else(|| "Infinity".into());
                (k.clone(), json!(s))
            })
            .collect::<Map<_, _>>(),
    )
}

fn only_known(slots: &ResourceSlots, known: &[String]) -> Value {
    Value::Object(
        slots
            .iter()
            .filter(|(k, _)| known.iter().any(|n| n == k))
            .map(|(k, v)| (k.to_owned(), json!(v.to_string())))
            .collect(),
    )
}

/// GET /resource/presets
pub async fn presets(app: Arc<App>, _ctx: Ctx) -> Reply {
    let known: Vec<String> = known_slots(&app)
        .await?
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let mut out = Vec::new();
    for p in app.store.presets().await? {
        out.push(json!({"name": p.name, "resource_slots": only_known(&parse_slots(&p.resource_slots)?, &known)}));
    }
    ok_json(json!({"presets": out}))
}

/// POST /resource/check-presets: the caller's limits, use and what remains; what remains
/// on the agents; and which presets could start now.
pub async fn check_presets(app: Arc<App>, ctx: Ctx) -> Reply {
    let owner = super::kernel::owner(&app, &ctx).await?;
    let known: Vec<String> = known_slots(&app)
        .await?
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let policy = &owner.policy;
    let limits: Limits = known
        .iter()
        .map(|slot| {
            let l = policy.total_resource_slots.get_opt(slot).or(
                match policy.default_for_unspecified {
                    DefaultForUnspecified::Limited => Some(Decimal::ZERO),
                    DefaultForUnspecified::Unlimited => None,
                },
            );
            (slot.clone(), l)
        })
        .collect();
    let ak = owner.access_key.clone();
    let occupied = app
        .store
        .read(move |c| crate::store::sessions::occupied_by(c, &ak))
        .await?;
    let mut using = ResourceSlots::new();
    for o in &occupied {
        using = using.add(&parse_slots(o)?);
    }
    let remaining: Limits = limits
        .iter()
        .map(|(k, l)| (k.clone(), l.map(|l| (l - using.get(k)).max(Decimal::ZERO))))
        .collect();
    let (agents, _) = app
        .store
        .agents(Some(AgentStatus::Alive.to_string()), 100_000, 0)
        .await?;
    let mut per_agent = Vec::new();
    let mut total = ResourceSlots::new();
    for a in &agents {
        let free = parse_slots(&a.available_slots)?
            .sub(&parse_slots(&a.occupied_slots)?)
            .clamp_negative();
        total = total.add(&free);
        per_agent.push(free);
    }
    let mut presets = Vec::new();
    for p in app.store.presets().await? {
        let slots = parse_slots(&p.resource_slots)?;
        let within_key = slots.iter().all(|(k, v)| {
            remaining
                .iter()
                .find(|(n, _)| n == k)
                .and_then(|(_, l)| *l)
                .is_none_or(|l| v <= l)
        });
        let on_an_agent = per_agent.iter().any(|free| slots.fits_in(free));
        presets.push(json!({
            "name": p.name,
            "resource_slots": only_known(&slots, &known),
            "allocatable": within_key && on_an_agent,
        }));
    }
    ok_json(json!({
        "keypair_limits": limits_json(&limits),
        "keypair_using": only_known(&using, &known),
        "keypair_remaining": limits_json(&remaining),
        "scaling_group_remaining": only_known(&total, &known),
        "presets": presets,
    }))
}

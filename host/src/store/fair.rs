//! The fair claim's order, shared by every backend: a backend gathers each integration's due
//! work (within its in-flight cap) into [`Lane`]s by shop, and [`take_turns`] picks from them
//! round-robin — one from each shop in turn, and within a shop from each of its integrations
//! in turn, starting after where the last claim stopped — passing over an integration whose
//! rate limit ([`pace`]) admits nothing now.

use std::collections::{BTreeMap, HashMap, VecDeque};

use uuid::Uuid;

use super::Admission;
use crate::model::{Integration, Timestamp, pace};

/// Where the last claim's round-robin stopped, so the next one goes on from there.
#[derive(Default)]
pub struct Rotation {
    last_shop: Option<String>,
    last_integration: HashMap<String, Uuid>,
}

/// One integration's due work, as a backend found it.
pub struct Lane<T> {
    pub integration: Integration,
    /// Its due work, oldest first, at most what its cap leaves room for.
    pub due: VecDeque<T>,
    /// Its rate limit's state ([`pace`]), as the backend keeps it; updated by the turns taken.
    pub pace: Option<u64>,
    /// Whether a turn took from its rate limit (its pace must be written back).
    pub paced: bool,
    /// Stopped: its rate limit admits nothing more now.
    blocked: bool,
}

impl<T> Lane<T> {
    pub fn new(integration: Integration, due: VecDeque<T>, pace: Option<u64>) -> Lane<T> {
        Lane {
            integration,
            due,
            pace,
            paced: false,
            blocked: false,
        }
    }
}

/// What [`take_turns`] picked.
pub struct Turns<T> {
    /// In claim order.
    pub chosen: Vec<T>,
    /// The earliest time a rate limit admits again, or `now` when due work was left behind
    /// (the limit was reached).
    pub next_at: Option<Timestamp>,
}

/// Picks up to `limit` pieces of due work from `shops` round-robin (see the module docs).
pub fn take_turns<T>(
    shops: &mut BTreeMap<String, Vec<Lane<T>>>,
    rotation: &mut Rotation,
    limit: usize,
    admission: &dyn Admission,
    now: Timestamp,
) -> Turns<T> {
    let mut next_at: Option<Timestamp> = None;
    let mut later = |at: Timestamp| next_at = Some(next_at.map_or(at, |n: Timestamp| n.min(at)));
    let mut order: Vec<String> = shops.keys().cloned().collect();
    if let Some(last) = &rotation.last_shop {
        let start = order.iter().position(|s| s > last).unwrap_or(0);
        order.rotate_left(start);
    }
    for shop in &order {
        let lanes = shops.get_mut(shop).expect("listed");
        lanes.sort_by_key(|l| l.integration.id);
        if let Some(last) = rotation.last_integration.get(shop) {
            let start = lanes
                .iter()
                .position(|l| l.integration.id > *last)
                .unwrap_or(0);
            lanes.rotate_left(start);
        }
    }
    let mut turn: HashMap<String, usize> = HashMap::new();
    let mut chosen = Vec::new();
    'rounds: loop {
        let mut progress = false;
        for shop in &order {
            if chosen.len() >= limit {
                break 'rounds;
            }
            let lanes = shops.get_mut(shop).expect("listed");
            let count = lanes.len();
            let start = *turn.get(shop).unwrap_or(&0);
            for step in 0..count {
                let index = (start + step) % count;
                let lane = &mut lanes[index];
                if lane.blocked || lane.due.is_empty() {
                    continue;
                }
                if let Some(rate) = admission.rate_limit(&lane.integration) {
                    match pace(lane.pace, rate, now) {
                        Ok(tat) => {
                            lane.pace = Some(tat);
                            lane.paced = true;
                        }
                        Err(at) => {
                            lane.blocked = true;
                            later(at);
                            continue;
                        }
                    }
                }
                chosen.push(lane.due.pop_front().expect("not empty"));
                turn.insert(shop.clone(), index + 1);
                rotation.last_shop = Some(shop.clone());
                rotation
                    .last_integration
                    .insert(shop.clone(), lane.integration.id);
                progress = true;
                break;
            }
        }
        if !progress {
            break;
        }
    }
    if shops
        .values()
        .flatten()
        .any(|lane| !lane.blocked && !lane.due.is_empty())
    {
        later(now);
    }
    Turns { chosen, next_at }
}

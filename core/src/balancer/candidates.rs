//! The candidates stage: the backends a request may go to on this worker now (health's
//! [`Selection`]; subsets will narrow it here too), with what the policy lays out over them: a
//! round-robin cycle, weighted-random prefix sums. Which of them have room under their
//! `max_requests` is known only at the pick, from the shared counts it reads
//! ([`super::counting`]), so a full backend stays a candidate and the pick passes it.
//!
//! Built when the selection's backends change, never per request, and only the structures the
//! policy uses.

use std::rc::Rc;

use fastrand::Rng;

use super::counting::Room;
use crate::config::Config;
use crate::health::{Mode, Selection};
use crate::policy::round_robin::RotationError;
use crate::policy::{Rotation, WeightedRandom};

/// What a policy lays out over the candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spread {
    /// A smooth weighted round-robin cycle (round-robin, and hashing's fallback).
    pub rotation: bool,
    /// Weighted-random prefix sums.
    pub random: bool,
}

/// Why no candidate may take a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Health took every backend out.
    NoHealthyBackend,
    /// Every candidate is at its `max_requests`.
    CircuitOpen,
}

/// The backends a request may go to, and the policy's structures over them.
#[derive(Debug)]
pub struct Candidates {
    /// Health's choice of backends.
    pub selection: Rc<Selection>,
    /// Over the population: slots are positions in it.
    rotation: Option<Rotation>,
    /// Over the population: positions in it.
    random: Option<WeightedRandom>,
}

impl Candidates {
    /// The candidates of `selection`, with what `spread` asks for laid out over them.
    ///
    /// A cycle too large to lay out cannot happen here: [`check_cycles`] refused such weights
    /// at configure time for every group a selection can be.
    pub fn new(selection: Rc<Selection>, config: &Config, spread: Spread) -> Self {
        let weights = || selection.weights(config);
        let rotation = if spread.rotation {
            Rotation::new(&weights()).ok()
        } else {
            None
        };
        let random = spread.random.then(|| WeightedRandom::new(&weights()));
        Self {
            selection,
            rotation,
            random,
        }
    }

    /// Whether any backend may take a request.
    pub fn admit(&self) -> Result<(), Refusal> {
        if self.selection.mode == Mode::AllDown {
            return Err(Refusal::NoHealthyBackend);
        }
        Ok(())
    }

    /// Backend indices that may take requests, in configuration order.
    pub fn population(&self) -> &[usize] {
        &self.selection.population
    }

    /// Whether backend `index` may take requests.
    pub fn allows(&self, index: usize) -> bool {
        self.selection.allows(index)
    }

    /// The round-robin backend for `ticket`; `None` when there are no candidates.
    pub fn rotate(&self, ticket: u64) -> Option<usize> {
        let population = self.population();
        let position = match &self.rotation {
            Some(rotation) => rotation.pick(ticket),
            // Never laid out (see `new`): still one of the candidates, in turn.
            None => usize::try_from(ticket % population.len().max(1) as u64).unwrap_or(0),
        };
        population.get(position).copied()
    }

    /// A weighted random backend; `None` when there are no candidates.
    pub fn random(&self, rng: &mut Rng) -> Option<usize> {
        let population = self.population();
        let position = match &self.random {
            Some(random) => random.pick(rng)?,
            None if population.is_empty() => return None,
            None => rng.usize(..population.len()),
        };
        population.get(position).copied()
    }
}

impl Candidates {
    /// The round-robin backend for `ticket` if it has room, else the next one with room: along
    /// the rotation's following slots (as many as there are candidates), then, for weights
    /// that left none of those open, the candidates after it in configuration order. So a
    /// full backend's turns go to the backends after it in the cycle, and the order of every
    /// other ticket is unchanged. `None` when none has room.
    pub fn rotate_with_room(&self, ticket: u64, room: &Room<'_>) -> Option<usize> {
        let first = self.rotate(ticket)?;
        if room.has_room(first) {
            return Some(first);
        }
        let population = self.population();
        let steps = population.len() as u64;
        if let Some(next) = (1..=steps)
            .filter_map(|step| self.rotate(ticket.wrapping_add(step)))
            .find(|&index| room.has_room(index))
        {
            return Some(next);
        }
        let at = population.iter().position(|&index| index == first)?;
        population
            .iter()
            .cycle()
            .skip(at + 1)
            .take(population.len())
            .copied()
            .find(|&index| room.has_room(index))
    }

    /// A weighted random backend among those with room (weights honoured among them); `None`
    /// when none has room. One draw when the drawn backend has room, else one pass.
    pub fn random_with_room(&self, rng: &mut Rng, room: &Room<'_>) -> Option<usize> {
        let drawn = self.random(rng)?;
        if room.has_room(drawn) {
            return Some(drawn);
        }
        let population = self.population();
        let open = |position: usize| population.get(position).is_some_and(|&i| room.has_room(i));
        let position = match &self.random {
            Some(random) => random.pick_where(rng, open)?,
            None => {
                let open: Vec<usize> = (0..population.len()).filter(|&p| open(p)).collect();
                *open.get(rng.usize(..open.len().max(1)))?
            }
        };
        population.get(position).copied()
    }
}

/// Checks at configure time that every group of backends a selection can become has a
/// round-robin cycle small enough to lay out: all primaries (normal with every primary healthy,
/// and panic), and all backups. A subset of a group has a cycle no longer than the group's
/// (its weights' common divisor is a multiple of the group's, their sum smaller), so these two
/// bound every selection.
pub fn check_cycles(config: &Config) -> Result<(), RotationError> {
    let (backups, primaries): (Vec<_>, Vec<_>) = config.backends.iter().partition(|b| b.backup);
    for group in [primaries, backups] {
        let weights: Vec<u32> = group.iter().map(|b| b.weight).collect();
        match Rotation::check(&weights) {
            Ok(_) | Err(RotationError::Empty) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

//! Task placement: the pure function that decides which container instance
//! each copy of a task goes to, following ECS placement strategies
//! (binpack, spread, random, chained up to five) and constraints
//! (distinctInstance, memberOf), plus the parsers for their JSON and CLI
//! shorthand forms.
//!
//! Everything here is plain data in, plain data out. It must do no I/O: no
//! files, no network, no clock, no logging. Randomness comes only from the
//! seed handed to [`place`], so every decision can be replayed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::scheduler::query::{Expression, QuerySubject};
pub use crate::vocab::placement::*;
pub use crate::vocab::Protocol;

/// The attribute holding an instance's CPU architecture.
pub const ARCHITECTURE_ATTRIBUTE: &str = "ecs.cpu-architecture";

/// Lifecycle state of a container instance; only `Active` ones take tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InstanceStatus {
    /// Accepting tasks.
    Active,
    /// Being emptied; takes no new tasks.
    Draining,
    /// Agent not connected; takes no new tasks.
    Disconnected,
}

impl fmt::Display for InstanceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InstanceStatus::Active => "ACTIVE",
            InstanceStatus::Draining => "DRAINING",
            InstanceStatus::Disconnected => "DISCONNECTED",
        })
    }
}

/// What the placer needs to know about one container instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceView {
    /// Container instance id.
    pub id: String,
    /// Lifecycle state.
    pub status: InstanceStatus,
    /// Built-in and custom attributes, including `ecs.cpu-architecture`.
    pub attributes: BTreeMap<String, String>,
    /// CPU units not yet reserved.
    pub remaining_cpu: i64,
    /// Memory (MiB) not yet reserved.
    pub remaining_memory_mib: i64,
    /// Host ports already bound.
    pub used_ports: BTreeSet<(u16, Protocol)>,
    /// Running plus pending tasks per task group (`service:web`, `family:web`).
    pub tasks_by_group: BTreeMap<String, u32>,
    /// Running plus pending tasks in total.
    pub running_tasks_count: u32,
}

/// What one copy of the task needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskDemand {
    /// Task group (`service:web`, `family:web`).
    pub group: String,
    /// CPU units.
    pub cpu: i64,
    /// Memory in MiB.
    pub memory_mib: i64,
    /// Host ports the task binds (port 0 means dynamic and is ignored).
    pub static_ports: Vec<(u16, Protocol)>,
    /// Platforms the image is built for (`arm64`, `amd64`, `arm/v7`);
    /// `None` when unknown, which lets any instance qualify.
    pub architectures: Option<Vec<String>>,
}
/// A copy that could not be placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementFailure {
    /// Which copy (0-based, in the order requested).
    pub copy: usize,
    /// ECS-style reason that applied to the most active instances:
    /// `RESOURCE:MEMORY`, `RESOURCE:CPU`, `RESOURCE:PORTS`,
    /// `MemberOf constraint`, `DistinctInstance constraint`, `ARCHITECTURE`
    /// or `NO_ACTIVE_INSTANCES`.
    pub reason: String,
    /// How many active instances each reason ruled out, in words.
    pub detail: String,
}

/// Why one instance was or was not used, in plain words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceVerdict {
    /// Container instance id.
    pub instance_id: String,
    /// Copies placed on it in this call.
    pub placed: u32,
    /// `chosen: ...`, `rejected: ...` or `not chosen: ...`; rejections are
    /// judged on the state after the last placement.
    pub verdict: String,
}

/// Result of [`place`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementOutcome {
    /// Instance id for each placed copy, in order.
    pub placements: Vec<String>,
    /// One entry per copy that fit nowhere.
    pub failures: Vec<PlacementFailure>,
    /// One verdict per input instance, in input order.
    pub explanation: Vec<InstanceVerdict>,
}

/// Why an instance cannot take the next copy. Variant order is the order
/// checks run and breaks ties when picking a failure reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Rejection {
    NotActive,
    Architecture,
    MemberOf(usize),
    Distinct,
    Port(u16, Protocol),
    Cpu,
    Memory,
}

impl Rejection {
    fn reason(self) -> &'static str {
        match self {
            Rejection::NotActive => "NO_ACTIVE_INSTANCES",
            Rejection::Architecture => "ARCHITECTURE",
            Rejection::MemberOf(_) => "MemberOf constraint",
            Rejection::Distinct => "DistinctInstance constraint",
            Rejection::Port(..) => "RESOURCE:PORTS",
            Rejection::Cpu => "RESOURCE:CPU",
            Rejection::Memory => "RESOURCE:MEMORY",
        }
    }

    fn rank(self) -> usize {
        match self {
            Rejection::NotActive => 0,
            Rejection::Architecture => 1,
            Rejection::MemberOf(_) => 2,
            Rejection::Distinct => 3,
            Rejection::Port(..) => 4,
            Rejection::Cpu => 5,
            Rejection::Memory => 6,
        }
    }
}

/// Working copy of one instance.
struct Slot<'a> {
    view: &'a InstanceView,
    active: bool,
    arch_ok: bool,
    cpu: i64,
    memory: i64,
    /// Tasks of the demand's group, existing plus placed here.
    group_count: u32,
    placed: u32,
    extra_ports: Vec<(u16, Protocol)>,
    /// Index into the memberOf list of the first expression not satisfied.
    failed_member_of: Option<usize>,
}

/// How `memberOf` expressions see an instance during placement, including
/// the copies placed on it so far.
struct SlotSubject<'a> {
    view: &'a InstanceView,
    group: &'a str,
    placed: u32,
}

impl QuerySubject for SlotSubject<'_> {
    fn attribute(&self, name: &str) -> Option<&str> {
        self.view.attributes.get(name).map(String::as_str)
    }
    fn instance_id(&self) -> &str {
        &self.view.id
    }
    fn running_tasks_count(&self) -> u32 {
        self.view.running_tasks_count.saturating_add(self.placed)
    }
    fn any_task_group(&self, f: &mut dyn FnMut(&str) -> bool) -> bool {
        if self.placed > 0 && f(self.group) {
            return true;
        }
        self.view
            .tasks_by_group
            .iter()
            .any(|(group, &count)| count > 0 && f(group))
    }
}

impl Slot<'_> {
    fn refresh_member_of(&mut self, member_of: &[&Expression], group: &str) {
        let subject = SlotSubject {
            view: self.view,
            group,
            placed: self.placed,
        };
        self.failed_member_of = member_of.iter().position(|e| !e.matches(&subject));
    }

    fn rejection(&self, demand: &TaskDemand, distinct: bool) -> Option<Rejection> {
        if !self.active {
            return Some(Rejection::NotActive);
        }
        if !self.arch_ok {
            return Some(Rejection::Architecture);
        }
        if let Some(i) = self.failed_member_of {
            return Some(Rejection::MemberOf(i));
        }
        if distinct && self.group_count > 0 {
            return Some(Rejection::Distinct);
        }
        for &port in &demand.static_ports {
            if port.0 != 0
                && (self.view.used_ports.contains(&port) || self.extra_ports.contains(&port))
            {
                return Some(Rejection::Port(port.0, port.1));
            }
        }
        if self.cpu < demand.cpu {
            return Some(Rejection::Cpu);
        }
        if self.memory < demand.memory_mib {
            return Some(Rejection::Memory);
        }
        None
    }
}

/// Canonical spelling of a CPU architecture / image platform, so
/// `aarch64`, `arm64` and `linux/arm64/v8` compare equal.
pub fn canonical_arch(s: &str) -> String {
    let lower = s.trim().to_ascii_lowercase();
    let s = lower.strip_prefix("linux/").unwrap_or(&lower);
    match s {
        "x86_64" | "x86-64" | "amd64" => "amd64",
        "aarch64" | "arm64" | "arm64/v8" | "armv8" | "armv8l" => "arm64",
        "arm" | "armhf" | "armv7" | "armv7l" | "arm/v7" => "arm/v7",
        "armel" | "armv6" | "armv6l" | "arm/v6" => "arm/v6",
        "i386" | "i686" | "386" => "386",
        other => other,
    }
    .to_string()
}

/// Spread-over-attribute bookkeeping for one strategy.
struct Buckets {
    /// Bucket index per slot (in input order).
    of_slot: Vec<usize>,
    /// Tasks of the group per bucket.
    counts: Vec<u32>,
    /// Attribute value per bucket (`None`: instance lacks the attribute).
    values: Vec<Option<String>>,
}

fn plural(n: impl Into<u64>, word: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// Places `count` copies of `demand`, one at a time, on `instances`.
///
/// Each choice deducts CPU, memory and ports from a working copy of the
/// instances, so later copies see earlier ones. Only `Active` instances whose
/// architecture suits the image, that satisfy every constraint and that
/// have the resources left are candidates; `strategies` then act as
/// successive tie-breakers (pass [`default_run_task_strategies`] or
/// [`default_service_strategies`] for ECS's defaults; this function does not
/// enforce [`MAX_STRATEGIES`], see [`validate_strategies`]), and remaining
/// ties go to the smallest instance id. Random choices use only `seed`.
///
/// Runs in O(count × instances × strategies).
pub fn place(
    demand: &TaskDemand,
    count: usize,
    instances: &[InstanceView],
    strategies: &[PlacementStrategy],
    constraints: &[PlacementConstraint],
    seed: u64,
) -> PlacementOutcome {
    let distinct = constraints
        .iter()
        .any(|c| matches!(c, PlacementConstraint::DistinctInstance));
    let member_of: Vec<&Expression> = constraints
        .iter()
        .filter_map(|c| match c {
            PlacementConstraint::MemberOf(e) => Some(e),
            PlacementConstraint::DistinctInstance => None,
        })
        .collect();
    let wanted_arches: Option<Vec<String>> = demand
        .architectures
        .as_ref()
        .map(|a| a.iter().map(|s| canonical_arch(s)).collect());

    let mut slots: Vec<Slot> = instances
        .iter()
        .map(|view| {
            let arch_ok = match &wanted_arches {
                None => true,
                Some(wanted) => view
                    .attributes
                    .get(ARCHITECTURE_ATTRIBUTE)
                    .is_some_and(|a| wanted.contains(&canonical_arch(a))),
            };
            let mut slot = Slot {
                view,
                active: view.status == InstanceStatus::Active,
                arch_ok,
                cpu: view.remaining_cpu,
                memory: view.remaining_memory_mib,
                group_count: view.tasks_by_group.get(&demand.group).copied().unwrap_or(0),
                placed: 0,
                extra_ports: Vec::new(),
                failed_member_of: None,
            };
            if slot.active && slot.arch_ok {
                slot.refresh_member_of(&member_of, &demand.group);
            }
            slot
        })
        .collect();

    // Visit slots in id order so that "first candidate" means "smallest id".
    let mut order: Vec<usize> = (0..slots.len()).collect();
    order.sort_by(|&a, &b| slots[a].view.id.cmp(&slots[b].view.id));

    // One bucket table per spread-over-attribute strategy (None for others).
    let mut buckets: Vec<Option<Buckets>> = strategies
        .iter()
        .map(|s| match s {
            PlacementStrategy::Spread(SpreadField::Attribute(name)) => {
                let mut index: BTreeMap<Option<&str>, usize> = BTreeMap::new();
                let mut b = Buckets {
                    of_slot: Vec::with_capacity(slots.len()),
                    counts: Vec::new(),
                    values: Vec::new(),
                };
                for slot in &slots {
                    let value = slot.view.attributes.get(name).map(String::as_str);
                    let next = index.len();
                    let i = *index.entry(value).or_insert(next);
                    if i == b.counts.len() {
                        b.counts.push(0);
                        b.values.push(value.map(str::to_string));
                    }
                    if slot.active {
                        b.counts[i] = b.counts[i].saturating_add(slot.group_count);
                    }
                    b.of_slot.push(i);
                }
                Some(b)
            }
            _ => None,
        })
        .collect();

    let mut rng = StdRng::seed_from_u64(seed);
    let mut placements = Vec::with_capacity(count);
    let mut failures = Vec::new();
    let mut candidates: Vec<usize> = Vec::with_capacity(slots.len());

    for copy in 0..count {
        candidates.clear();
        candidates.extend(
            order
                .iter()
                .copied()
                .filter(|&i| slots[i].rejection(demand, distinct).is_none()),
        );
        if candidates.is_empty() {
            // Nothing changes from here on, so every remaining copy fails alike.
            let (reason, detail) = failure_reason(&slots, demand, distinct);
            failures.extend((copy..count).map(|copy| PlacementFailure {
                copy,
                reason: reason.clone(),
                detail: detail.clone(),
            }));
            break;
        }
        for (k, strategy) in strategies.iter().enumerate() {
            if candidates.len() <= 1 {
                break;
            }
            match strategy {
                PlacementStrategy::Random => {
                    let pick = candidates[rng.gen_range(0..candidates.len())];
                    candidates.clear();
                    candidates.push(pick);
                }
                PlacementStrategy::Binpack(field) => {
                    let key = |i: usize| match field {
                        Field::Cpu => slots[i].cpu,
                        Field::Memory => slots[i].memory,
                    };
                    keep_min(&mut candidates, key);
                }
                PlacementStrategy::Spread(SpreadField::InstanceId) => {
                    keep_min(&mut candidates, |i| i64::from(slots[i].group_count));
                }
                PlacementStrategy::Spread(SpreadField::Attribute(_)) => {
                    if let Some(b) = &buckets[k] {
                        keep_min(&mut candidates, |i| i64::from(b.counts[b.of_slot[i]]));
                    }
                }
            }
        }
        let chosen = candidates[0];
        let slot = &mut slots[chosen];
        slot.cpu = slot.cpu.saturating_sub(demand.cpu);
        slot.memory = slot.memory.saturating_sub(demand.memory_mib);
        slot.extra_ports
            .extend(demand.static_ports.iter().copied().filter(|p| p.0 != 0));
        slot.group_count = slot.group_count.saturating_add(1);
        slot.placed = slot.placed.saturating_add(1);
        if !member_of.is_empty() {
            slot.refresh_member_of(&member_of, &demand.group);
        }
        for b in buckets.iter_mut().flatten() {
            let c = &mut b.counts[b.of_slot[chosen]];
            *c = c.saturating_add(1);
        }
        placements.push(slot.view.id.clone());
    }

    let explanation = slots
        .iter()
        .enumerate()
        .map(|(i, slot)| InstanceVerdict {
            instance_id: slot.view.id.clone(),
            placed: slot.placed,
            verdict: verdict(
                i, slot, demand, distinct, &member_of, strategies, &buckets, seed,
            ),
        })
        .collect();

    PlacementOutcome {
        placements,
        failures,
        explanation,
    }
}

/// Keeps the candidates with the smallest key, preserving their order.
fn keep_min(candidates: &mut Vec<usize>, key: impl Fn(usize) -> i64) {
    let Some(min) = candidates.iter().map(|&i| key(i)).min() else {
        return;
    };
    candidates.retain(|&i| key(i) == min);
}

/// The reason that ruled out the most active instances, and a summary.
fn failure_reason(slots: &[Slot], demand: &TaskDemand, distinct: bool) -> (String, String) {
    let active = slots.iter().filter(|s| s.active).count();
    if active == 0 {
        return (
            Rejection::NotActive.reason().to_string(),
            format!("none of the {} instances is ACTIVE", slots.len()),
        );
    }
    let mut tally = [0usize; 7];
    let mut first = [None; 7];
    for slot in slots.iter().filter(|s| s.active) {
        if let Some(r) = slot.rejection(demand, distinct) {
            tally[r.rank()] += 1;
            first[r.rank()].get_or_insert(r);
        }
    }
    let best = (0..tally.len())
        .filter(|&r| tally[r] > 0)
        .max_by(|&a, &b| tally[a].cmp(&tally[b]).then(b.cmp(&a)))
        .and_then(|r| first[r]);
    let reason = best
        .map_or("RESOURCE:MEMORY", Rejection::reason)
        .to_string();
    let detail = (0..tally.len())
        .filter(|&r| tally[r] > 0)
        .filter_map(|r| {
            first[r].map(|rej| {
                format!(
                    "{} on {} of {active} active instances",
                    rej.reason(),
                    tally[r]
                )
            })
        })
        .collect::<Vec<_>>()
        .join(", ");
    (reason, detail)
}

#[allow(clippy::too_many_arguments)]
fn verdict(
    index: usize,
    slot: &Slot,
    demand: &TaskDemand,
    distinct: bool,
    member_of: &[&Expression],
    strategies: &[PlacementStrategy],
    buckets: &[Option<Buckets>],
    seed: u64,
) -> String {
    if slot.placed > 0 {
        let why = match strategies.first() {
            None => "first eligible instance by id".to_string(),
            Some(PlacementStrategy::Binpack(Field::Memory)) => {
                format!("binpack(memory) {} MiB left after placement", slot.memory)
            }
            Some(PlacementStrategy::Binpack(Field::Cpu)) => {
                format!("binpack(cpu) {} CPU units left after placement", slot.cpu)
            }
            Some(PlacementStrategy::Spread(SpreadField::InstanceId)) => format!(
                "spread(instanceId) {} of {} on this instance after placement",
                plural(slot.group_count, "task"),
                demand.group
            ),
            Some(PlacementStrategy::Spread(SpreadField::Attribute(name))) => {
                let (count, value) = buckets[0].as_ref().map_or((0, None), |b| {
                    let i = b.of_slot[index];
                    (b.counts[i], b.values[i].as_deref())
                });
                format!(
                    "spread(attribute:{name}) {} of {} where {name} is {} after placement",
                    plural(count, "task"),
                    demand.group,
                    value.unwrap_or("unset")
                )
            }
            Some(PlacementStrategy::Random) => format!("random pick with seed {seed}"),
        };
        return if slot.placed == 1 {
            format!("chosen: {why}")
        } else {
            format!("chosen for {}: {why}", plural(slot.placed, "task"))
        };
    }
    let view = slot.view;
    let Some(rejection) = slot.rejection(demand, distinct) else {
        return match strategies.first() {
            Some(s) => format!("not chosen: eligible, but {s} ranked another instance first"),
            None => "not chosen: eligible, but another instance comes first by id".to_string(),
        };
    };
    let why = match rejection {
        Rejection::NotActive => format!("instance is {}", view.status),
        Rejection::Architecture => {
            let wanted = demand
                .architectures
                .as_deref()
                .unwrap_or_default()
                .join(", ");
            match view.attributes.get(ARCHITECTURE_ATTRIBUTE) {
                Some(arch) => format!("architecture {arch} is not among the image's platforms ({wanted})"),
                None => format!(
                    "instance has no {ARCHITECTURE_ATTRIBUTE} attribute and the image's platforms are ({wanted})"
                ),
            }
        }
        Rejection::MemberOf(i) => format!("does not satisfy memberOf({})", member_of[i]),
        Rejection::Distinct => format!(
            "already runs a task of group {} (distinctInstance)",
            demand.group
        ),
        Rejection::Port(port, proto) => format!("host port {port}/{proto} is in use"),
        Rejection::Cpu => format!("needs {} CPU units, {} left", demand.cpu, slot.cpu),
        Rejection::Memory => format!(
            "needs {} MiB memory, {} MiB left",
            demand.memory_mib, slot.memory
        ),
    };
    format!("rejected: {why}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(id: &str, cpu: i64, mem: i64) -> InstanceView {
        InstanceView {
            id: id.to_string(),
            status: InstanceStatus::Active,
            attributes: [
                ("ecs.cpu-architecture", "arm64"),
                ("ecs.availability-zone", "rack-a"),
                ("ecs.os-type", "linux"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            remaining_cpu: cpu,
            remaining_memory_mib: mem,
            used_ports: BTreeSet::new(),
            tasks_by_group: BTreeMap::new(),
            running_tasks_count: 0,
        }
    }

    fn with_attr(mut i: InstanceView, k: &str, v: &str) -> InstanceView {
        i.attributes.insert(k.to_string(), v.to_string());
        i
    }

    fn with_group(mut i: InstanceView, group: &str, n: u32) -> InstanceView {
        i.tasks_by_group.insert(group.to_string(), n);
        i.running_tasks_count += n;
        i
    }

    fn demand(cpu: i64, mem: i64) -> TaskDemand {
        TaskDemand {
            group: "service:web".to_string(),
            cpu,
            memory_mib: mem,
            static_ports: Vec::new(),
            architectures: None,
        }
    }

    fn strategies(s: &str) -> Vec<PlacementStrategy> {
        parse_strategies(s).unwrap()
    }

    fn verdict_of<'a>(out: &'a PlacementOutcome, id: &str) -> &'a str {
        &out.explanation
            .iter()
            .find(|v| v.instance_id == id)
            .unwrap()
            .verdict
    }

    #[test]
    fn strategies_table() {
        let pool = vec![
            inst("a", 1024, 1024),
            inst("b", 4096, 512),
            inst("c", 2048, 2048),
            with_group(inst("d", 512, 4096), "service:web", 1),
        ];
        // (strategies, count, expected placements)
        let table: &[(&str, usize, &[&str])] = &[
            ("type=binpack,field=memory", 1, &["b"]),
            ("type=binpack,field=memory", 3, &["b", "b", "a"]),
            ("type=binpack,field=cpu", 1, &["d"]),
            // spread(instanceId): d already has one, others tie -> id order.
            ("type=spread,field=instanceId", 4, &["a", "b", "c", "a"]),
            ("type=spread,field=host", 1, &["a"]),
            // No strategies: smallest id among candidates.
            ("", 2, &["a", "a"]),
        ];
        for (s, count, want) in table {
            let out = place(&demand(128, 256), *count, &pool, &strategies(s), &[], 1);
            assert_eq!(out.placements, *want, "{s}");
            assert!(out.failures.is_empty(), "{s}");
        }
    }

    #[test]
    fn spread_over_attribute_then_instance() {
        let pool = vec![
            with_attr(inst("a1", 1024, 1024), "ecs.availability-zone", "rack-a"),
            with_attr(inst("a2", 1024, 1024), "ecs.availability-zone", "rack-a"),
            with_attr(inst("b1", 1024, 1024), "ecs.availability-zone", "rack-b"),
        ];
        let out = place(
            &demand(10, 10),
            4,
            &pool,
            &default_service_strategies(),
            &[],
            0,
        );
        assert_eq!(out.placements, ["a1", "b1", "a2", "b1"]);
        assert_eq!(
            verdict_of(&out, "b1"),
            "chosen for 2 tasks: spread(attribute:ecs.availability-zone) 2 tasks of service:web where ecs.availability-zone is rack-b after placement"
        );
    }

    #[test]
    fn chained_strategies_break_ties_in_order() {
        let pool = vec![
            with_group(inst("a", 1024, 1024), "service:web", 1),
            inst("b", 1024, 1024),
            inst("c", 1024, 2048),
        ];
        // binpack ties a and b; spread picks b (fewer tasks of the group).
        let s = strategies("type=binpack,field=memory type=spread,field=instanceId");
        assert_eq!(
            place(&demand(1, 100), 1, &pool, &s, &[], 0).placements,
            ["b"]
        );
        // Reversed: spread ties b and c; binpack picks b (less memory).
        let s = strategies("type=spread,field=instanceId type=binpack,field=memory");
        assert_eq!(
            place(&demand(1, 100), 1, &pool, &s, &[], 0).placements,
            ["b"]
        );
        // binpack then random: the random pick stays among the binpack winners.
        let s = strategies("type=binpack,field=memory type=random");
        for seed in 0..20 {
            let p = place(&demand(1, 100), 1, &pool, &s, &[], seed).placements;
            assert!(p == ["a"] || p == ["b"], "{p:?}");
        }
    }

    #[test]
    fn random_is_seeded_and_uses_every_candidate() {
        let pool: Vec<_> = (0..5)
            .map(|i| inst(&format!("i{i}"), 10_000, 10_000))
            .collect();
        let s = default_run_task_strategies();
        let a = place(&demand(1, 1), 50, &pool, &s, &[], 42);
        let b = place(&demand(1, 1), 50, &pool, &s, &[], 42);
        assert_eq!(a, b);
        let c = place(&demand(1, 1), 50, &pool, &s, &[], 43);
        assert_ne!(a.placements, c.placements);
        let used: BTreeSet<_> = a.placements.iter().collect();
        assert_eq!(used.len(), 5);
        let v = verdict_of(&a, "i0");
        assert!(
            v.starts_with("chosen for ") && v.ends_with(": random pick with seed 42"),
            "{v}"
        );
    }

    #[test]
    fn resources_are_deducted_between_copies() {
        // 3 copies of 300 MiB never land twice on the 512 MiB instance.
        let pool = vec![inst("small", 4096, 512), inst("big", 4096, 1024)];
        let s = strategies("type=binpack,field=memory");
        let out = place(&demand(100, 300), 5, &pool, &s, &[], 0);
        assert_eq!(out.placements, ["small", "big", "big", "big"]);
        assert_eq!(out.failures.len(), 1);
        assert_eq!(out.failures[0].copy, 4);
        assert_eq!(out.failures[0].reason, "RESOURCE:MEMORY");
        assert_eq!(
            verdict_of(&out, "small"),
            "chosen: binpack(memory) 212 MiB left after placement"
        );
        assert_eq!(
            verdict_of(&out, "big"),
            "chosen for 3 tasks: binpack(memory) 124 MiB left after placement"
        );
    }

    #[test]
    fn full_instances_fail_with_the_most_common_reason() {
        let pool = vec![
            inst("a", 4096, 256),
            inst("b", 4096, 256),
            inst("c", 100, 4096),
            with_attr(inst("d", 4096, 4096), "ecs.cpu-architecture", "amd64"),
        ];
        let mut d = demand(512, 512);
        d.architectures = Some(vec!["arm64".to_string()]);
        let out = place(&d, 2, &pool, &[], &[], 0);
        assert!(out.placements.is_empty());
        assert_eq!(out.failures.len(), 2);
        assert_eq!(out.failures[1].copy, 1);
        assert_eq!(out.failures[0].reason, "RESOURCE:MEMORY");
        assert_eq!(
            out.failures[0].detail,
            "ARCHITECTURE on 1 of 4 active instances, RESOURCE:CPU on 1 of 4 active instances, RESOURCE:MEMORY on 2 of 4 active instances"
        );
        assert_eq!(
            verdict_of(&out, "a"),
            "rejected: needs 512 MiB memory, 256 MiB left"
        );
        assert_eq!(
            verdict_of(&out, "c"),
            "rejected: needs 512 CPU units, 100 left"
        );
    }

    #[test]
    fn port_conflicts() {
        let mut busy = inst("a", 4096, 4096);
        busy.used_ports.insert((80, Protocol::Tcp));
        let mut udp = inst("b", 4096, 4096);
        udp.used_ports.insert((80, Protocol::Udp));
        let pool = vec![busy, udp, inst("c", 4096, 4096)];
        let mut d = demand(10, 10);
        d.static_ports = vec![(80, Protocol::Tcp)];
        let out = place(&d, 3, &pool, &[], &[], 0);
        // Two copies of a static-port task never share an instance.
        assert_eq!(out.placements, ["b", "c"]);
        assert_eq!(out.failures.len(), 1);
        assert_eq!(out.failures[0].reason, "RESOURCE:PORTS");
        assert_eq!(
            verdict_of(&out, "a"),
            "rejected: host port 80/tcp is in use"
        );
    }

    #[test]
    fn architecture_mismatch() {
        let pool = vec![
            with_attr(inst("a", 4096, 4096), "ecs.cpu-architecture", "arm/v7"),
            with_attr(inst("b", 4096, 4096), "ecs.cpu-architecture", "aarch64"),
            with_attr(inst("c", 4096, 4096), "ecs.cpu-architecture", "x86_64"),
        ];
        let mut d = demand(10, 10);
        d.architectures = Some(vec!["arm64".to_string(), "amd64".to_string()]);
        let s = strategies("type=spread,field=instanceId");
        let out = place(&d, 2, &pool, &s, &[], 0);
        assert_eq!(out.placements, ["b", "c"]);
        assert_eq!(
            verdict_of(&out, "a"),
            "rejected: architecture arm/v7 is not among the image's platforms (arm64, amd64)"
        );
        d.architectures = Some(vec!["linux/arm/v7".to_string()]);
        assert_eq!(place(&d, 1, &pool, &s, &[], 0).placements, ["a"]);
        d.architectures = Some(vec!["riscv64".to_string()]);
        let out = place(&d, 1, &pool, &s, &[], 0);
        assert_eq!(out.failures[0].reason, "ARCHITECTURE");
    }

    #[test]
    fn only_active_instances_are_eligible() {
        let mut draining = inst("a", 4096, 4096);
        draining.status = InstanceStatus::Draining;
        let mut gone = inst("b", 4096, 4096);
        gone.status = InstanceStatus::Disconnected;
        let out = place(
            &demand(1, 1),
            1,
            &[draining.clone(), gone.clone()],
            &[],
            &[],
            0,
        );
        assert!(out.placements.is_empty());
        assert_eq!(out.failures[0].reason, "NO_ACTIVE_INSTANCES");
        assert_eq!(verdict_of(&out, "a"), "rejected: instance is DRAINING");
        assert_eq!(verdict_of(&out, "b"), "rejected: instance is DISCONNECTED");
        let out = place(
            &demand(1, 1),
            2,
            &[draining, gone, inst("c", 10, 10)],
            &[],
            &[],
            0,
        );
        assert_eq!(out.placements, ["c", "c"]);
        assert_eq!(
            place(&demand(1, 1), 1, &[], &[], &[], 0).failures[0].reason,
            "NO_ACTIVE_INSTANCES"
        );
    }

    #[test]
    fn distinct_instance() {
        let pool = vec![
            with_group(inst("a", 4096, 4096), "service:web", 1),
            inst("b", 4096, 4096),
            with_group(inst("c", 4096, 4096), "service:other", 3),
        ];
        let c = parse_constraints("type=distinctInstance").unwrap();
        let out = place(&demand(1, 1), 3, &pool, &[], &c, 0);
        assert_eq!(out.placements, ["b", "c"]);
        assert_eq!(out.failures[0].reason, "DistinctInstance constraint");
        assert_eq!(
            verdict_of(&out, "a"),
            "rejected: already runs a task of group service:web (distinctInstance)"
        );
    }

    #[test]
    fn member_of_with_several_operators() {
        let pool = vec![
            with_attr(inst("pi-1", 4096, 4096), "disk", "ssd"),
            with_attr(inst("pi-2", 4096, 4096), "disk", "sd"),
            with_group(
                with_attr(inst("pi-3", 4096, 4096), "disk", "nvme"),
                "service:db",
                1,
            ),
            with_attr(inst("pi-4", 4096, 4096), "ecs.instance-type", "pi5.8gb"),
        ];
        let s = strategies("type=spread,field=instanceId");
        let table: &[(&str, &[&str])] = &[
            ("attribute:disk == ssd", &["pi-1", "pi-1"]),
            ("attribute:disk in [ssd, nvme]", &["pi-1", "pi-3"]),
            ("attribute:disk != ssd", &["pi-2", "pi-3"]),
            ("attribute:disk !exists", &["pi-4", "pi-4"]),
            ("attribute:ecs.instance-type =~ pi5.*", &["pi-4", "pi-4"]),
            (
                "ec2InstanceId not_in [pi-1, pi-2] and not attribute:disk exists",
                &["pi-4", "pi-4"],
            ),
            ("task:group == service:db", &["pi-3", "pi-3"]),
            (
                "attribute:disk == sd or ec2InstanceId == pi-4",
                &["pi-2", "pi-4"],
            ),
            // Sees the copies placed in this call: only the first copy fits.
            (
                "runningTasksCount == 0 and attribute:disk == ssd",
                &["pi-1"],
            ),
        ];
        for (expr, want) in table {
            let c = parse_constraints(&format!("type=memberOf,expression=\"{expr}\"")).unwrap();
            let out = place(&demand(1, 1), 2, &pool, &s, &c, 0);
            assert_eq!(out.placements, *want, "{expr}");
        }
        let c = parse_constraints("type=memberOf,expression=attribute:disk == ssd").unwrap();
        let out = place(&demand(1, 1), 1, &pool, &s, &c, 0);
        assert_eq!(
            verdict_of(&out, "pi-2"),
            "rejected: does not satisfy memberOf(attribute:disk == ssd)"
        );
        assert_eq!(
            verdict_of(&out, "pi-1"),
            "chosen: spread(instanceId) 1 task of service:web on this instance after placement"
        );
        let c = parse_constraints("type=memberOf,expression=attribute:disk == tape").unwrap();
        assert_eq!(
            place(&demand(1, 1), 1, &pool, &s, &c, 0).failures[0].reason,
            "MemberOf constraint"
        );
    }

    #[test]
    fn explanation_for_eligible_but_not_chosen() {
        let pool = vec![inst("a", 10, 100), inst("b", 10, 200)];
        let out = place(
            &demand(1, 1),
            1,
            &pool,
            &strategies("type=binpack,field=memory"),
            &[],
            0,
        );
        assert_eq!(
            verdict_of(&out, "b"),
            "not chosen: eligible, but binpack(memory) ranked another instance first"
        );
    }

    #[test]
    fn parses_json_and_shorthand_forms() {
        let json = r#"[{"type":"binpack","field":"memory"},{"type":"spread","field":"attribute:ecs.availability-zone"},{"type":"random"}]"#;
        let short = "type=binpack,field=memory type=spread,field=attribute:ecs.availability-zone type=random";
        let want = vec![
            PlacementStrategy::Binpack(Field::Memory),
            PlacementStrategy::Spread(SpreadField::Attribute("ecs.availability-zone".to_string())),
            PlacementStrategy::Random,
        ];
        assert_eq!(parse_strategies(json).unwrap(), want);
        assert_eq!(parse_strategies(short).unwrap(), want);
        assert_eq!(serde_json::to_string(&want).unwrap(), json);
        assert_eq!(
            parse_strategies(r#"{"Type":"spread","Field":"host"}"#).unwrap(),
            [PlacementStrategy::Spread(SpreadField::InstanceId)]
        );

        let json = r#"[{"type":"distinctInstance"},{"type":"memberOf","expression":"attribute:disk in [ssd, nvme]"}]"#;
        let c = parse_constraints(json).unwrap();
        assert_eq!(c[0], PlacementConstraint::DistinctInstance);
        assert_eq!(serde_json::to_string(&c).unwrap(), json);
        let short =
            "type=distinctInstance type=memberOf,expression='attribute:disk in [ssd, nvme]'";
        assert_eq!(parse_constraints(short).unwrap(), c);
        // Unquoted expression with spaces and commas.
        let short = "type=distinctInstance type=memberOf,expression=attribute:disk in [ssd, nvme]";
        assert_eq!(parse_constraints(short).unwrap(), c);
        assert_eq!(c[1].to_string(), "memberOf(attribute:disk in [ssd, nvme])");
    }

    #[test]
    fn parse_errors() {
        let six = "type=random ".repeat(6);
        assert_eq!(
            parse_strategies(&six).unwrap_err(),
            PlacementError::TooManyStrategies { count: 6, max: 5 }
        );
        assert_eq!(
            parse_strategies(&six).unwrap_err().to_string(),
            "at most 5 placement strategies can be chained, got 6"
        );
        let json = format!("[{}]", [r#"{"type":"random"}"#; 6].join(","));
        assert!(matches!(
            parse_strategies(&json),
            Err(PlacementError::TooManyStrategies { .. })
        ));
        assert!(parse_strategies(&"type=random ".repeat(5)).is_ok());

        let table: &[(&str, &str)] = &[
            ("type=binpack", "the binpack strategy needs a field"),
            ("type=binpack,field=disk", "the binpack field must be cpu or memory, got \"disk\""),
            ("type=spread,field=zone", "the spread field must be instanceId, host or attribute:NAME, got \"zone\""),
            ("type=pack", "unknown placement strategy type \"pack\"; use binpack, spread or random"),
            ("field=cpu", "invalid shorthand \"field=cpu\": missing \"type=\""),
            ("binpack", "invalid shorthand \"binpack\": expected key=value pairs such as type=spread,field=instanceId"),
            ("type=random,colour=red", "invalid shorthand \"type=random,colour=red\": unknown key \"colour\"; expected type or field"),
        ];
        for (input, want) in table {
            assert_eq!(
                parse_strategies(input).unwrap_err().to_string(),
                *want,
                "{input}"
            );
        }
        assert!(matches!(
            parse_strategies("[{\"type\":1}]"),
            Err(PlacementError::Json(_))
        ));
        assert_eq!(
            parse_constraints("type=memberOf").unwrap_err().to_string(),
            "the memberOf constraint needs an expression"
        );
        assert_eq!(
            parse_constraints("type=memberOf,expression=attribute:disk").unwrap_err().to_string(),
            "invalid memberOf expression: expected an operator after \"attribute:disk\" at column 15"
        );
        assert_eq!(
            parse_constraints("type=distinctInstance,expression=attribute:a exists").unwrap_err(),
            PlacementError::UnexpectedExpression
        );
        assert!(parse_constraints(&"type=distinctInstance ".repeat(11)).is_err());
        assert_eq!(parse_strategies("  ").unwrap(), []);
    }

    #[test]
    fn same_seed_same_result_across_strategies() {
        let pool: Vec<_> = (0..30)
            .map(|i| {
                let zone = ["rack-a", "rack-b", "rack-c"][i % 3];
                with_attr(
                    inst(&format!("pi-{i:02}"), 4000, 4000),
                    "ecs.availability-zone",
                    zone,
                )
            })
            .collect();
        let s = strategies("type=spread,field=attribute:ecs.availability-zone type=random");
        let a = place(&demand(100, 100), 60, &pool, &s, &[], 7);
        let b = place(&demand(100, 100), 60, &pool, &s, &[], 7);
        assert_eq!(a, b);
        assert_eq!(a.placements.len(), 60);
    }

    #[test]
    fn thousands_of_tasks_into_a_thousand_instances() {
        let pool: Vec<_> = (0..1000)
            .map(|i| {
                let zone = ["rack-a", "rack-b", "rack-c", "rack-d"][i % 4];
                with_attr(
                    inst(&format!("pi-{i:04}"), 4000, 4096),
                    "ecs.availability-zone",
                    zone,
                )
            })
            .collect();
        let c =
            parse_constraints("type=memberOf,expression=attribute:ecs.os-type == linux").unwrap();
        let out = place(
            &demand(100, 128),
            3000,
            &pool,
            &default_service_strategies(),
            &c,
            1,
        );
        assert_eq!(out.placements.len(), 3000);
        let per_instance: BTreeMap<_, usize> =
            out.placements.iter().fold(BTreeMap::new(), |mut m, p| {
                *m.entry(p).or_default() += 1;
                m
            });
        assert!(
            per_instance.values().all(|&n| n == 3),
            "spread should even out"
        );
    }
}

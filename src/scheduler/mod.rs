//! Deciding where tasks run: the cluster query language (`query`), the
//! pure placement function (`placement`), the architectures an image runs
//! on and the refusal of one that fits no instance (`platforms`), the placement of tasks waiting in
//! PROVISIONING (`provisioning`) and the service reconciler (`service`).
//! No I/O here.

pub mod health;
pub mod placement;
pub mod platforms;
pub mod provisioning;
pub mod query;
pub mod service;
pub mod targets;

use std::collections::BTreeMap;

use crate::model::ContainerInstance;
use crate::store::State;
use placement::{InstanceStatus, InstanceView};

/// The scheduler's view of one instance: its attributes and what is left
/// after the tasks it holds. Pure: reads only the state.
pub fn instance_view(state: &State, instance: &ContainerInstance) -> InstanceView {
    let usage = state.usage(&instance.cluster, instance.id());
    let mut attributes: BTreeMap<String, String> = instance
        .registration
        .attributes
        .iter()
        .map(|a| (a.name.clone(), a.value.clone().unwrap_or_default()))
        .collect();
    attributes
        .entry("ecs.availability-zone".to_string())
        .or_insert_with(|| "default".to_string());
    let mut used_ports = usage.ports.clone();
    // A reserved port is refused for either protocol when a placement is
    // applied (`State::misfit`); the view must agree, or the controller
    // would keep proposing placements that apply refuses.
    for port in &instance.registration.reserved_ports {
        used_ports.insert((*port, placement::Protocol::Tcp));
        used_ports.insert((*port, placement::Protocol::Udp));
    }
    InstanceView {
        id: instance.id().to_string(),
        status: match instance.status.as_str() {
            "ACTIVE" if instance.agent_connected => InstanceStatus::Active,
            "DRAINING" => InstanceStatus::Draining,
            _ => InstanceStatus::Disconnected,
        },
        attributes,
        remaining_cpu: instance.registration.cpu - usage.cpu,
        remaining_memory_mib: instance.registration.memory_mib - usage.memory_mib,
        used_ports,
        running_tasks_count: usage.tasks.len() as u32,
        tasks_by_group: usage.groups,
    }
}

/// Views of every registered (not INACTIVE) instance of a cluster.
pub fn cluster_views(state: &State, cluster: &str) -> Vec<InstanceView> {
    state
        .container_instances
        .scan_prefix(&format!("{cluster}/"))
        .map(|(_, instance)| instance)
        .filter(|instance| instance.status != "INACTIVE")
        .map(|instance| instance_view(state, instance))
        .collect()
}

/// What one task of `definition` needs from an instance, for the placer:
/// its resources, its static host ports, and the architectures its images
/// run on when the cluster registry knows them (`platforms`).
pub fn task_demand(
    state: &State,
    definition: &crate::taskdef::TaskDefinition,
    group: &str,
) -> placement::TaskDemand {
    let demand = crate::store::ecs::demand_of(definition);
    placement::TaskDemand {
        group: group.to_string(),
        cpu: demand.cpu,
        memory_mib: demand.memory_mib,
        static_ports: demand.ports,
        architectures: platforms::definition_architectures(state, definition),
    }
}

/// The task definition's own `memberOf` constraints.
pub fn definition_constraints(
    definition: &crate::taskdef::TaskDefinition,
) -> Vec<placement::PlacementConstraint> {
    definition
        .placement_constraints
        .iter()
        .filter_map(|c| c.expression.as_deref())
        .filter_map(|expression| {
            placement::PlacementConstraint::from_parts("memberOf", Some(expression)).ok()
        })
        .collect()
}

/// Records in a view that a task was just placed on it (so the next
/// decision of the same pass sees the room it took).
pub fn take_room(view: &mut InstanceView, demand: &placement::TaskDemand) {
    view.remaining_cpu -= demand.cpu;
    view.remaining_memory_mib -= demand.memory_mib;
    view.used_ports.extend(demand.static_ports.iter().copied());
    view.running_tasks_count += 1;
    *view.tasks_by_group.entry(demand.group.clone()).or_default() += 1;
}

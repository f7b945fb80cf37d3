//! Applying run-task overrides to a task definition.

use std::collections::HashSet;

use super::*;

// ---------------------------------------------------------------------------
// Overrides
// ---------------------------------------------------------------------------

/// Applies run-task overrides to a task definition and validates the result.
///
/// `command` replaces the container's command; `environment` entries replace
/// variables of the same name or are appended; cpu/memory/memoryReservation and
/// the task-level fields replace the originals. An override naming an unknown
/// container, or the same container twice, is an error at
/// `containerOverrides[i].name`.
pub fn apply_overrides(
    td: &TaskDefinition,
    overrides: &TaskOverride,
) -> Result<TaskDefinition, TaskDefinitionError> {
    let mut out = td.clone();
    let mut seen = HashSet::new();
    for (i, co) in overrides.container_overrides.iter().enumerate() {
        let path = format!("containerOverrides[{i}].name");
        if co.name.is_empty() {
            return Err(TaskDefinitionError::invalid(
                path,
                "container name is required",
            ));
        }
        if !seen.insert(co.name.as_str()) {
            return Err(TaskDefinitionError::invalid(
                path,
                format!("duplicate override for container \"{}\"", co.name),
            ));
        }
        let Some(c) = out
            .container_definitions
            .iter_mut()
            .find(|c| c.name == co.name)
        else {
            return Err(TaskDefinitionError::invalid(
                path,
                format!(
                    "no container named \"{}\" in task definition {}",
                    co.name,
                    td.family_revision()
                ),
            ));
        };
        if let Some(cmd) = &co.command {
            c.command = cmd.clone();
        }
        for kv in &co.environment {
            match c.environment.iter_mut().find(|e| e.name == kv.name) {
                Some(existing) => existing.value = kv.value.clone(),
                None => c.environment.push(kv.clone()),
            }
        }
        if co.cpu.is_some() {
            c.cpu = co.cpu;
        }
        if co.memory.is_some() {
            c.memory = co.memory;
        }
        if co.memory_reservation.is_some() {
            c.memory_reservation = co.memory_reservation;
        }
    }
    if overrides.cpu.is_some() {
        out.cpu = overrides.cpu.clone();
    }
    if overrides.memory.is_some() {
        out.memory = overrides.memory.clone();
    }
    if overrides.task_role_arn.is_some() {
        out.task_role_arn = overrides.task_role_arn.clone();
    }
    if overrides.execution_role_arn.is_some() {
        out.execution_role_arn = overrides.execution_role_arn.clone();
    }
    validate(&out)?;
    Ok(out)
}

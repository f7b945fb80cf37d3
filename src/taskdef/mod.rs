//! ECS task definitions: the document a user registers with
//! `orc register-task-definition` (the same JSON `aws ecs register-task-definition`
//! and `describe-task-definition` use), and the `overrides` of run-task.
//!
//! This module owns the task-definition document itself:
//!
//! * the serde types, shaped so that serializing gives ECS-shaped camelCase JSON;
//! * parsing ([`parse_register_input`], [`parse_container_definitions`],
//!   [`parse_overrides`]), which accepts every field ECS accepts, keeps the
//!   ones orc implements and reports the others as [`Warning`]s naming their
//!   JSON path, and reports type errors with their JSON path;
//! * validation ([`validate`]) with ECS's rules plus the ones orc needs;
//! * references to a task definition ([`TaskDefinitionRef`]);
//! * applying run-task overrides ([`apply_overrides`]);
//! * small resource helpers for the scheduler and the agent.
//!
//! It must not do I/O or storage: no files, no network, no database, no clock.
//! Assigning ARNs, revisions, status and timestamps is the caller's job; this
//! module only carries those output fields.
//!
//! Paths in errors and warnings are relative to the task definition object,
//! e.g. `containerDefinitions[1].memory`; for overrides, relative to the
//! `TaskOverride` object, e.g. `containerOverrides[0].name`.

mod overrides;
mod parse;
mod types;
mod validate;

pub use crate::vocab::Protocol;
pub use overrides::*;
pub use parse::*;
pub use types::*;
pub use validate::*;

#[cfg(test)]
mod tests;

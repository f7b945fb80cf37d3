//! The sizes orc accepts, in one place: ECS's documented quotas where ECS
//! has one, and orc's own caps on what a request may carry, so one request
//! can never make a server hold more than a bounded amount of memory.
//! README's "Limits" table lists the same numbers.
//!
//! Plain constants and the sentences that name them; no I/O.

/// ECS's "task definition max size": the JSON of one task definition.
pub const MAX_TASK_DEFINITION_BYTES: usize = 64 * 1024;

/// The largest gRPC message a server decodes from a client or an agent (a
/// request body of `Orc.Call`, an agent's report). Larger messages are
/// refused before they are read whole; a task definition is at most
/// [`MAX_TASK_DEFINITION_BYTES`], so 1 MiB leaves room for every verb.
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// The largest HTTP request body the API port reads (`GET /metrics` needs
/// none).
pub const MAX_HTTP_BODY_BYTES: usize = 0;

/// ECS's DescribeTasks: "a list of up to 100 task IDs or full ARN entries".
pub const MAX_DESCRIBE_TASKS: usize = 100;

/// ECS's DescribeContainerInstances: up to 100 container instances.
pub const MAX_DESCRIBE_CONTAINER_INSTANCES: usize = 100;

/// ECS's DescribeServices: up to 10 services.
pub const MAX_DESCRIBE_SERVICES: usize = 10;

/// ECS's DescribeClusters: up to 100 clusters.
pub const MAX_DESCRIBE_CLUSTERS: usize = 100;

/// ECS's DeleteTaskDefinitions: up to 10 revisions per call.
pub const MAX_DELETE_TASK_DEFINITIONS: usize = 10;

/// ECS's "tags per resource".
pub const MAX_TAGS: usize = 50;

/// `size` bytes as a short human figure (`64 KiB`, `23.5 MiB`).
pub fn human_bytes(size: usize) -> String {
    const KIB: f64 = 1024.0;
    let bytes = size as f64;
    if bytes >= KIB * KIB {
        format!("{:.1} MiB", bytes / (KIB * KIB))
    } else if bytes >= KIB {
        let kib = bytes / KIB;
        if kib.fract() == 0.0 {
            format!("{kib} KiB")
        } else {
            format!("{kib:.1} KiB")
        }
    } else {
        format!("{size} bytes")
    }
}

/// ECS's error for a list argument longer than a verb accepts, e.g.
/// "tasks can have at most 100 entries (got 5000): ask for them in batches".
pub fn too_many(field: &str, limit: usize, got: usize, verb: &str) -> String {
    format!(
        "{field} can have at most {limit} entries in one {verb} call (got {got}): ask in batches of {limit}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_bytes(MAX_TASK_DEFINITION_BYTES), "64 KiB");
        assert_eq!(human_bytes(MAX_REQUEST_BYTES), "1.0 MiB");
        assert_eq!(human_bytes(24_660_109), "23.5 MiB");
        assert_eq!(human_bytes(900), "900 bytes");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }

    #[test]
    fn a_list_too_long_names_the_field_and_the_limit() {
        assert_eq!(
            too_many("tasks", MAX_DESCRIBE_TASKS, 5000, "DescribeTasks"),
            "tasks can have at most 100 entries in one DescribeTasks call (got 5000): ask in batches of 100"
        );
    }
}

//! Validating a parsed task definition with ECS's rules plus the ones orc
//! needs; every error names its JSON path.

use std::collections::HashMap;

use super::*;

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// The repository path of an image reference when it has upper case, which
/// Docker refuses at pull and run ("repository name must be lowercase").
/// The registry host (a first component with `.` or `:`, or `localhost`),
/// the tag and the digest may have upper case.
pub(super) fn upper_case_repository(image: &str) -> Option<&str> {
    let name = image.split('@').next().unwrap_or(image);
    let name = match name.rfind(':') {
        // A colon after the last slash starts the tag.
        Some(colon) if !name[colon..].contains('/') => &name[..colon],
        _ => name,
    };
    let path = match name.split_once('/') {
        Some((host, rest)) if host.contains(['.', ':']) || host == "localhost" => rest,
        _ => name,
    };
    path.chars().any(|c| c.is_ascii_uppercase()).then_some(path)
}

/// Checks ECS's naming rule: 1 to 255 letters, numbers, hyphens, underscores.
pub(super) fn check_name(path: &str, what: &str, name: &str) -> Result<(), TaskDefinitionError> {
    if name.is_empty() {
        return Err(TaskDefinitionError::invalid(
            path,
            format!("{what} is required"),
        ));
    }
    if name.len() > 255 {
        return Err(TaskDefinitionError::invalid(
            path,
            format!("{what} must be at most 255 characters (got {})", name.len()),
        ));
    }
    if !name.chars().all(is_name_char) {
        return Err(TaskDefinitionError::invalid(
            path,
            format!("{what} \"{name}\" may only contain letters, numbers, hyphens and underscores"),
        ));
    }
    Ok(())
}

fn check_range(
    path: String,
    what: &str,
    value: Option<i64>,
    min: i64,
    max: i64,
    unit: &str,
) -> Result<(), TaskDefinitionError> {
    match value {
        Some(v) if v < min || v > max => Err(TaskDefinitionError::invalid(
            path,
            format!("{what} must be between {min} and {max}{unit} (got {v})"),
        )),
        _ => Ok(()),
    }
}

/// Validates a task definition against ECS's rules (and orc's). Returns the
/// first problem found, with its JSON path.
pub fn validate(td: &TaskDefinition) -> Result<(), TaskDefinitionError> {
    check_name("family", "family", &td.family)?;

    if let Some(cpu) = td
        .cpu
        .as_ref()
        .filter(|_| td.task_cpu_units().is_none_or(|v| v <= 0))
    {
        return Err(TaskDefinitionError::invalid(
            "cpu",
            format!("task cpu \"{cpu}\" is not a positive number of CPU units or vCPUs"),
        ));
    }
    if let Some(mem) = td
        .memory
        .as_ref()
        .filter(|_| td.task_memory_mib().is_none_or(|v| v <= 0))
    {
        return Err(TaskDefinitionError::invalid(
            "memory",
            format!("task memory \"{mem}\" is not a positive number of MiB or GB"),
        ));
    }
    for (i, pc) in td.placement_constraints.iter().enumerate() {
        if pc.constraint_type != "memberOf" {
            return Err(TaskDefinitionError::invalid(
                format!("placementConstraints[{i}].type"),
                format!(
                    "placement constraint type must be memberOf (got \"{}\")",
                    pc.constraint_type
                ),
            ));
        }
    }

    if td.tags.len() > crate::vocab::limits::MAX_TAGS {
        return Err(TaskDefinitionError::invalid(
            "tags",
            format!(
                "a task definition can have at most {} tags (got {})",
                crate::vocab::limits::MAX_TAGS,
                td.tags.len()
            ),
        ));
    }

    let containers = &td.container_definitions;
    if containers.is_empty() {
        return Err(TaskDefinitionError::invalid(
            "containerDefinitions",
            "at least one container definition is required",
        ));
    }
    if containers.len() > MAX_CONTAINERS {
        return Err(TaskDefinitionError::invalid(
            "containerDefinitions",
            format!(
                "a task definition can have at most {MAX_CONTAINERS} containers (got {})",
                containers.len()
            ),
        ));
    }

    let mut by_name: HashMap<&str, usize> = HashMap::new();
    for (i, c) in containers.iter().enumerate() {
        let path = format!("containerDefinitions[{i}].name");
        check_name(&path, "container name", &c.name)?;
        if let Some(first) = by_name.insert(c.name.as_str(), i) {
            return Err(TaskDefinitionError::invalid(
                path,
                format!(
                    "duplicate container name \"{}\" (also used by containerDefinitions[{first}])",
                    c.name
                ),
            ));
        }
    }

    if !containers.iter().any(ContainerDefinition::is_essential) {
        return Err(TaskDefinitionError::invalid(
            "containerDefinitions",
            "at least one container must be essential",
        ));
    }

    let task_memory_set = td.memory.is_some();
    let mut host_ports: HashMap<(i64, Protocol), String> = HashMap::new();
    for (i, c) in containers.iter().enumerate() {
        validate_container(td, i, c, task_memory_set, &by_name, &mut host_ports)?;
    }

    check_dependency_cycles(containers, &by_name)
}

fn validate_container(
    td: &TaskDefinition,
    i: usize,
    c: &ContainerDefinition,
    task_memory_set: bool,
    by_name: &HashMap<&str, usize>,
    host_ports: &mut HashMap<(i64, Protocol), String>,
) -> Result<(), TaskDefinitionError> {
    let base = format!("containerDefinitions[{i}]");
    let p = |field: &str| format!("{base}.{field}");

    if c.image.trim().is_empty() {
        return Err(TaskDefinitionError::invalid(
            p("image"),
            "image is required",
        ));
    }
    if c.image
        .chars()
        .any(|ch| ch.is_whitespace() || ch.is_control())
    {
        return Err(TaskDefinitionError::invalid(
            p("image"),
            format!(
                "image \"{}\" must not contain whitespace",
                c.image.escape_debug()
            ),
        ));
    }

    if let Some(repository) = upper_case_repository(&c.image) {
        return Err(TaskDefinitionError::invalid(
            p("image"),
            format!(
                "image \"{}\" has upper case in its repository name \"{repository}\": Docker accepts only lowercase there (a tag may have upper case), so write \"{}\"",
                c.image,
                c.image.replacen(repository, &repository.to_lowercase(), 1)
            ),
        ));
    }

    if let Some(cpu) = c.cpu.filter(|v| *v < 0) {
        return Err(TaskDefinitionError::invalid(
            p("cpu"),
            format!("cpu must not be negative (got {cpu})"),
        ));
    }
    for (field, value) in [
        ("memory", c.memory),
        ("memoryReservation", c.memory_reservation),
    ] {
        if let Some(v) = value.filter(|v| *v < MIN_CONTAINER_MEMORY_MIB) {
            return Err(TaskDefinitionError::invalid(
                p(field),
                format!("{field} must be at least {MIN_CONTAINER_MEMORY_MIB} MiB (got {v})"),
            ));
        }
    }
    if let (Some(mem), Some(res)) = (c.memory, c.memory_reservation) {
        if res > mem {
            return Err(TaskDefinitionError::invalid(
                p("memoryReservation"),
                format!("memoryReservation ({res} MiB) must not exceed memory ({mem} MiB)"),
            ));
        }
    }
    if c.memory.is_none() && c.memory_reservation.is_none() && !task_memory_set {
        return Err(TaskDefinitionError::invalid(
            p("memory"),
            "memory or memoryReservation is required when the task definition has no task-level memory",
        ));
    }

    for (j, pm) in c.port_mappings.iter().enumerate() {
        let pm_path = format!("{base}.portMappings[{j}]");
        match pm.container_port {
            None => {
                return Err(TaskDefinitionError::invalid(
                    format!("{pm_path}.containerPort"),
                    "containerPort is required",
                ));
            }
            Some(port) => check_range(
                format!("{pm_path}.containerPort"),
                "containerPort",
                Some(port),
                1,
                65535,
                "",
            )?,
        }
        check_range(
            format!("{pm_path}.hostPort"),
            "hostPort",
            pm.host_port,
            0,
            65535,
            "",
        )?;
        if let Some(hp) = pm.host_port.filter(|hp| *hp > 0) {
            let here = format!("{pm_path}.hostPort");
            if let Some(prev) = host_ports.get(&(hp, pm.protocol)) {
                return Err(TaskDefinitionError::invalid(
                    here,
                    format!("host port {hp}/{} is already used by {prev}", pm.protocol),
                ));
            }
            host_ports.insert((hp, pm.protocol), here);
        }
    }

    for (j, kv) in c.environment.iter().enumerate() {
        if kv.name.is_empty() {
            return Err(TaskDefinitionError::invalid(
                format!("{base}.environment[{j}].name"),
                "environment variable name must not be empty",
            ));
        }
    }

    for (j, secret) in c.secrets.iter().enumerate() {
        if secret.name.is_empty() {
            return Err(TaskDefinitionError::invalid(
                format!("{base}.secrets[{j}].name"),
                "a secret's environment variable name must not be empty",
            ));
        }
        if c.environment.iter().any(|kv| kv.name == secret.name) {
            return Err(TaskDefinitionError::invalid(
                format!("{base}.secrets[{j}].name"),
                format!(
                    "{:?} is also set in environment: a variable comes from one place",
                    secret.name
                ),
            ));
        }
        secret_name_from(&secret.value_from).map_err(|message| {
            TaskDefinitionError::invalid(format!("{base}.secrets[{j}].valueFrom"), message)
        })?;
    }

    for (j, link) in c.links.iter().enumerate() {
        let target = link.split(':').next().unwrap_or("");
        let path = format!("{base}.links[{j}]");
        if target == c.name {
            return Err(TaskDefinitionError::invalid(
                path,
                "a container cannot link to itself",
            ));
        }
        if !by_name.contains_key(target) {
            return Err(TaskDefinitionError::invalid(
                path,
                format!("link names unknown container \"{target}\""),
            ));
        }
    }

    for (j, dep) in c.depends_on.iter().enumerate() {
        let path = format!("{base}.dependsOn[{j}].containerName");
        if dep.container_name == c.name {
            return Err(TaskDefinitionError::invalid(
                path,
                "a container cannot depend on itself",
            ));
        }
        let Some(&target) = by_name.get(dep.container_name.as_str()) else {
            return Err(TaskDefinitionError::invalid(
                path,
                format!(
                    "dependsOn names unknown container \"{}\"",
                    dep.container_name
                ),
            ));
        };
        let target_def = &td.container_definitions[target];
        match dep.condition {
            DependencyCondition::Healthy if target_def.health_check.is_none() => {
                return Err(TaskDefinitionError::invalid(
                    format!("{base}.dependsOn[{j}].condition"),
                    format!(
                        "condition HEALTHY requires container \"{}\" to have a healthCheck",
                        dep.container_name
                    ),
                ));
            }
            DependencyCondition::Complete | DependencyCondition::Success
                if target_def.is_essential() =>
            {
                return Err(TaskDefinitionError::invalid(
                    format!("{base}.dependsOn[{j}].condition"),
                    format!(
                        "condition {} cannot be used on essential container \"{}\"",
                        dep.condition, dep.container_name
                    ),
                ));
            }
            _ => {}
        }
    }

    if let Some(hc) = &c.health_check {
        let hp = |field: &str| format!("{base}.healthCheck.{field}");
        match hc.command.first().map(String::as_str) {
            None => {
                return Err(TaskDefinitionError::invalid(
                    hp("command"),
                    "healthCheck command must not be empty",
                ));
            }
            Some("CMD") | Some("CMD-SHELL") => {
                if hc.command.len() < 2 || hc.command[1].trim().is_empty() {
                    return Err(TaskDefinitionError::invalid(
                        hp("command"),
                        format!(
                            "healthCheck command needs a command after {}",
                            hc.command[0]
                        ),
                    ));
                }
            }
            Some(other) => {
                return Err(TaskDefinitionError::invalid(
                    hp("command[0]"),
                    format!(
                        "healthCheck command must start with CMD or CMD-SHELL (got \"{other}\")"
                    ),
                ));
            }
        }
        check_range(hp("interval"), "interval", hc.interval, 5, 300, " seconds")?;
        check_range(hp("timeout"), "timeout", hc.timeout, 2, 60, " seconds")?;
        check_range(hp("retries"), "retries", hc.retries, 1, 10, "")?;
        check_range(
            hp("startPeriod"),
            "startPeriod",
            hc.start_period,
            0,
            300,
            " seconds",
        )?;
    }

    check_range(
        p("stopTimeout"),
        "stopTimeout",
        c.stop_timeout,
        0,
        MAX_STOP_TIMEOUT_SECS,
        " seconds",
    )?;
    if let Some(st) = c.start_timeout.filter(|v| *v < 0) {
        return Err(TaskDefinitionError::invalid(
            p("startTimeout"),
            format!("startTimeout must not be negative (got {st})"),
        ));
    }
    for (j, u) in c.ulimits.iter().enumerate() {
        if u.soft_limit > u.hard_limit {
            return Err(TaskDefinitionError::invalid(
                format!("{base}.ulimits[{j}].softLimit"),
                format!(
                    "softLimit ({}) must not exceed hardLimit ({})",
                    u.soft_limit, u.hard_limit
                ),
            ));
        }
    }
    Ok(())
}

/// Edges of the start-up graph: (from container, to container, JSON path of the edge).
fn dependency_edges(
    containers: &[ContainerDefinition],
    by_name: &HashMap<&str, usize>,
) -> Vec<Vec<(usize, String)>> {
    containers
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let deps = c.depends_on.iter().enumerate().filter_map(|(j, d)| {
                by_name.get(d.container_name.as_str()).map(|&t| {
                    (
                        t,
                        format!("containerDefinitions[{i}].dependsOn[{j}].containerName"),
                    )
                })
            });
            let links = c.links.iter().enumerate().filter_map(|(j, l)| {
                let target = l.split(':').next().unwrap_or("");
                by_name
                    .get(target)
                    .map(|&t| (t, format!("containerDefinitions[{i}].links[{j}]")))
            });
            deps.chain(links).filter(|(t, _)| *t != i).collect()
        })
        .collect()
}

fn check_dependency_cycles(
    containers: &[ContainerDefinition],
    by_name: &HashMap<&str, usize>,
) -> Result<(), TaskDefinitionError> {
    let edges = dependency_edges(containers, by_name);
    // 0 = unvisited, 1 = on stack, 2 = done. Depth is bounded by MAX_CONTAINERS.
    let mut state = vec![0u8; containers.len()];
    let mut stack = Vec::new();
    fn visit(
        n: usize,
        edges: &[Vec<(usize, String)>],
        state: &mut [u8],
        stack: &mut Vec<usize>,
        containers: &[ContainerDefinition],
    ) -> Result<(), TaskDefinitionError> {
        state[n] = 1;
        stack.push(n);
        for (t, path) in &edges[n] {
            match state[*t] {
                1 => {
                    let start = stack.iter().position(|x| x == t).unwrap_or(0);
                    let mut names: Vec<&str> = stack[start..]
                        .iter()
                        .map(|&k| containers[k].name.as_str())
                        .collect();
                    names.push(containers[*t].name.as_str());
                    return Err(TaskDefinitionError::invalid(
                        path.clone(),
                        format!("dependency cycle: {}", names.join(" -> ")),
                    ));
                }
                0 => visit(*t, edges, state, stack, containers)?,
                _ => {}
            }
        }
        stack.pop();
        state[n] = 2;
        Ok(())
    }
    for n in 0..containers.len() {
        if state[n] == 0 {
            visit(n, &edges, &mut state, &mut stack, containers)?;
        }
    }
    Ok(())
}

impl TaskDefinition {
    /// Container indices in an order where every container comes after the
    /// containers it depends on or links to. Call on a validated definition;
    /// containers caught in a cycle are appended at the end in declaration order.
    pub fn start_order(&self) -> Vec<usize> {
        let mut by_name: HashMap<&str, usize> = HashMap::new();
        for (i, c) in self.container_definitions.iter().enumerate() {
            by_name.entry(c.name.as_str()).or_insert(i);
        }
        let edges = dependency_edges(&self.container_definitions, &by_name);
        let n = self.container_definitions.len();
        let mut placed = vec![false; n];
        let mut order = Vec::with_capacity(n);
        loop {
            let next = (0..n).find(|&i| !placed[i] && edges[i].iter().all(|(t, _)| placed[*t]));
            match next {
                Some(i) => {
                    placed[i] = true;
                    order.push(i);
                }
                None => break,
            }
        }
        order.extend((0..n).filter(|&i| !placed[i]));
        order
    }
}

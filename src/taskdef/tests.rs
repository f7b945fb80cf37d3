//! Table tests of parsing, validation and overrides.

use serde_json::Value;

use super::*;

const VALID: &str = r#"{
    "family": "web-app",
    "networkMode": "bridge",
    "taskRoleArn": "arn:aws:iam::123456789012:role/app",
    "containerDefinitions": [
        {
            "name": "web",
            "image": "nginx:1.25",
            "cpu": 256,
            "memory": 256,
            "memoryReservation": 128,
            "essential": true,
            "links": ["app:backend"],
            "portMappings": [
                {"containerPort": 80, "hostPort": 8080, "protocol": "tcp"},
                {"containerPort": 443, "hostPort": 0}
            ],
            "dependsOn": [{"containerName": "app", "condition": "HEALTHY"}],
            "logConfiguration": {"logDriver": "json-file", "options": {"max-size": "10m"}},
            "dockerLabels": {"team": "web"},
            "stopTimeout": 20
        },
        {
            "name": "app",
            "image": "registry.local:5000/app@sha256:abc",
            "cpu": 512,
            "memoryReservation": 192,
            "essential": true,
            "entryPoint": ["/bin/app"],
            "command": ["serve", "--port", "3000"],
            "environment": [{"name": "MODE", "value": "prod"}, {"name": "LOG", "value": "info"}],
            "portMappings": [{"containerPort": 3000, "protocol": "udp", "hostPort": 3000}],
            "healthCheck": {
                "command": ["CMD-SHELL", "curl -f http://localhost:3000/ || exit 1"],
                "interval": 10, "timeout": 3, "retries": 5, "startPeriod": 15
            },
            "workingDirectory": "/srv",
            "user": "1000:1000",
            "ulimits": [{"name": "nofile", "softLimit": 1024, "hardLimit": 4096}],
            "extraHosts": [{"hostname": "db", "ipAddress": "10.0.0.5"}],
            "dnsServers": ["10.0.0.2"]
        }
    ],
    "placementConstraints": [{"type": "memberOf", "expression": "attribute:arch == arm64"}],
    "requiresCompatibilities": ["EC2"],
    "tags": [{"key": "env", "value": "prod"}]
}"#;

fn valid() -> TaskDefinition {
    let (td, warnings) = parse_register_input(VALID).expect("valid document parses");
    assert!(warnings.is_empty(), "unexpected warnings: {warnings:?}");
    td
}

/// Sets a value in the VALID document at a JSON pointer, parses, validates.
fn with(pointer: &str, value: Value) -> Result<TaskDefinition, TaskDefinitionError> {
    let mut doc: Value = serde_json::from_str(VALID).unwrap();
    set_pointer(&mut doc, pointer, value);
    let (td, _) = parse_register_input(&doc.to_string())?;
    validate(&td)?;
    Ok(td)
}

fn set_pointer(doc: &mut Value, pointer: &str, value: Value) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let target = doc.pointer_mut(parent).unwrap();
    match target {
        Value::Object(m) => {
            m.insert(key.to_string(), value);
        }
        Value::Array(a) => {
            let i: usize = key.parse().unwrap();
            if i < a.len() {
                a[i] = value;
            } else {
                a.push(value);
            }
        }
        _ => panic!("bad pointer {pointer}"),
    }
}

fn remove_pointer(doc: &mut Value, pointer: &str) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    if let Some(Value::Object(m)) = doc.pointer_mut(parent) {
        m.remove(key);
    }
}

fn err_with(pointer: &str, value: Value) -> TaskDefinitionError {
    with(pointer, value).expect_err("expected an error")
}

fn assert_err(e: &TaskDefinitionError, path: &str, contains: &str) {
    assert_eq!(e.path(), path, "wrong path in: {e}");
    assert!(
        e.to_string().contains(contains),
        "message {:?} does not contain {:?}",
        e.to_string(),
        contains
    );
}

#[test]
fn valid_document_parses_and_validates() {
    let td = valid();
    validate(&td).unwrap();
    assert_eq!(td.family, "web-app");
    assert_eq!(td.container_definitions.len(), 2);
    let web = &td.container_definitions[0];
    assert_eq!(web.links, vec!["app:backend"]);
    assert_eq!(web.port_mappings[1].protocol, Protocol::Tcp);
    assert_eq!(web.depends_on[0].condition, DependencyCondition::Healthy);
    assert_eq!(web.stop_timeout_secs(), 20);
    let app = td.container("app").unwrap();
    assert_eq!(app.env("MODE"), Some("prod"));
    let hc = app.health_check.as_ref().unwrap();
    assert_eq!(hc.interval_secs(), 10);
    assert_eq!(app.stop_timeout_secs(), DEFAULT_STOP_TIMEOUT_SECS);
    assert!(app.is_essential());
    assert_eq!(td.start_order(), vec![1, 0]);
}

#[test]
fn health_check_defaults() {
    let hc = HealthCheck {
        command: vec!["CMD".into(), "true".into()],
        ..Default::default()
    };
    assert_eq!(hc.interval_secs(), 30);
    assert_eq!(hc.timeout_secs(), 5);
    assert_eq!(hc.retries_count(), 3);
    assert_eq!(hc.start_period_secs(), 0);
}

#[test]
fn serialization_is_ecs_shaped() {
    let td = valid();
    let v = serde_json::to_value(&td).unwrap();
    let c0 = &v["containerDefinitions"][0];
    assert_eq!(c0["memoryReservation"], 128);
    assert_eq!(c0["portMappings"][0]["containerPort"], 80);
    assert_eq!(c0["dependsOn"][0]["containerName"], "app");
    assert_eq!(c0["logConfiguration"]["logDriver"], "json-file");
    assert!(c0.get("entryPoint").is_none(), "empty vec skipped");
    assert!(c0.get("healthCheck").is_none(), "none skipped");
    assert_eq!(v["placementConstraints"][0]["type"], "memberOf");
    assert!(v.get("revision").is_none());
    assert_eq!(
        v["containerDefinitions"][1]["healthCheck"]["startPeriod"],
        15
    );
}

#[test]
fn round_trip() {
    let mut td = valid();
    td.revision = Some(3);
    td.status = Some(TaskDefinitionStatus::Active);
    td.task_definition_arn = Some("arn:aws:ecs:eu-west-1:123:task-definition/web-app:3".into());
    td.registered_at = Some(1_700_000_000.123);
    td.compatibilities = vec!["EC2".into(), "EXTERNAL".into()];
    td.volumes = vec![serde_json::json!({"name": "data"})];
    let json = serde_json::to_string_pretty(&td).unwrap();
    let (back, warnings) = parse_register_input(&json).unwrap();
    assert_eq!(back, td);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].path, "volumes");
    // And in the describe-task-definition wrapper.
    let wrapped = format!(r#"{{"taskDefinition": {json}}}"#);
    let (back2, _) = parse_register_input(&wrapped).unwrap();
    assert_eq!(back2, td);
}

#[test]
fn describe_wrapper_with_outside_tags() {
    let json = r#"{
        "taskDefinition": {
            "family": "x", "revision": 2, "status": "INACTIVE",
            "registeredAt": "2024-01-01T00:00:00+00:00",
            "requiresAttributes": [{"name": "com.amazonaws.ecs.capability.docker-remote-api.1.18"}],
            "registeredBy": "arn:aws:iam::1:root",
            "containerDefinitions": [{"name": "a", "image": "busybox", "memory": 64,
                "mountPoints": [], "volumesFrom": [], "systemControls": [], "secrets": []}],
            "volumes": [], "placementConstraints": []
        },
        "tags": [{"key": "k", "value": "v"}],
        "ResponseMetadata": {}
    }"#;
    let (td, warnings) = parse_register_input(json).unwrap();
    assert_eq!(td.revision, Some(2));
    assert_eq!(td.status, Some(TaskDefinitionStatus::Inactive));
    assert_eq!(td.registered_at, None);
    assert_eq!(
        td.tags,
        vec![Tag {
            key: "k".into(),
            value: "v".into()
        }]
    );
    let paths: Vec<&str> = warnings.iter().map(|w| w.path.as_str()).collect();
    assert_eq!(
        paths,
        vec!["registeredAt", "ResponseMetadata"],
        "{warnings:?}"
    );
    validate(&td).unwrap();
}

#[test]
fn unsupported_and_unknown_fields_warn() {
    let json = r#"{
        "family": "f",
        "pidMode": "host",
        "networkMode": "awsvpc",
        "runtimePlatform": {"cpuArchitecture": "ARM64"},
        "volumes": [{"name": "v", "host": {"sourcePath": "/data"}}],
        "containerDefinitions": [{
            "name": "a", "image": "busybox", "memory": 64,
            "environmentFiles": [{"value": "arn:...", "type": "s3"}],
            "interactive": false, "pseudoTerminal": null,
            "repositoryCredentials": {"credentialsParameter": "arn:..."},
            "linuxParameters": {"initProcessEnabled": true},
            "mountPoints": [{"sourceVolume": "v", "containerPath": "/data"}],
            "portMappings": [{"containerPort": 80, "appProtocol": "http"}],
            "memroy": 128,
            "Image": "x"
        }]
    }"#;
    let (td, warnings) = parse_register_input(json).unwrap();
    let find = |p: &str| {
        warnings
            .iter()
            .find(|w| w.path == p)
            .unwrap_or_else(|| panic!("no warning for {p}: {warnings:?}"))
    };
    find("pidMode");
    find("runtimePlatform");
    find("volumes");
    assert!(find("networkMode").message.contains("awsvpc"));
    assert!(find("containerDefinitions[0].environmentFiles")
        .message
        .contains("not supported"));
    find("containerDefinitions[0].repositoryCredentials");
    find("containerDefinitions[0].linuxParameters");
    find("containerDefinitions[0].mountPoints");
    find("containerDefinitions[0].portMappings[0].appProtocol");
    assert_eq!(
        find("containerDefinitions[0].memroy").message,
        "unknown field, ignored (did you mean \"memory\"?)"
    );
    assert!(find("containerDefinitions[0].Image")
        .message
        .contains("did you mean \"image\""));
    assert_eq!(warnings.len(), 11, "{warnings:?}");
    assert_eq!(td.volumes.len(), 1);
    assert_eq!(td.container_definitions[0].mount_points.len(), 1);
    assert_eq!(td.container_definitions[0].memory, Some(64));
    assert_eq!(
        warnings[0].to_string(),
        format!("{}: {}", warnings[0].path, warnings[0].message)
    );
    validate(&td).unwrap();
}

#[test]
fn type_errors_name_the_path() {
    let e = err_with("/containerDefinitions/1/memory", serde_json::json!("512"));
    assert_eq!(
        e.to_string(),
        "containerDefinitions[1].memory: expected an integer, got a string"
    );
    let e = err_with(
        "/containerDefinitions/0/portMappings/0/containerPort",
        serde_json::json!(80.5),
    );
    assert_err(
        &e,
        "containerDefinitions[0].portMappings[0].containerPort",
        "expected an integer",
    );
    let e = err_with("/containerDefinitions/1/command/1", serde_json::json!(3));
    assert_err(
        &e,
        "containerDefinitions[1].command[1]",
        "expected a string",
    );
    let e = err_with(
        "/containerDefinitions/0/dockerLabels/team",
        serde_json::json!(1),
    );
    assert_err(
        &e,
        "containerDefinitions[0].dockerLabels.team",
        "expected a string",
    );
    let e = err_with(
        "/containerDefinitions/0/essential",
        serde_json::json!("yes"),
    );
    assert_err(
        &e,
        "containerDefinitions[0].essential",
        "expected a boolean",
    );
    let e = err_with(
        "/containerDefinitions/0/portMappings/0/protocol",
        serde_json::json!("sctp"),
    );
    assert_err(
        &e,
        "containerDefinitions[0].portMappings[0].protocol",
        "must be one of tcp, udp",
    );
    let e = err_with(
        "/containerDefinitions/0/dependsOn/0/condition",
        serde_json::json!("READY"),
    );
    assert_err(
        &e,
        "containerDefinitions[0].dependsOn[0].condition",
        "START, COMPLETE",
    );
    let e = err_with("/containerDefinitions/0/cpu", serde_json::json!(u64::MAX));
    assert_err(&e, "containerDefinitions[0].cpu", "out of range");
    let e = err_with("/containerDefinitions/1", serde_json::json!("app"));
    assert_err(&e, "containerDefinitions[1]", "expected an object");
    let e = err_with("/containerDefinitions", serde_json::json!({}));
    assert_err(&e, "containerDefinitions", "expected an array");

    let mut doc: Value = serde_json::from_str(VALID).unwrap();
    remove_pointer(&mut doc, "/containerDefinitions/0/dependsOn/0/condition");
    let e = parse_register_input(&doc.to_string()).unwrap_err();
    assert_err(
        &e,
        "containerDefinitions[0].dependsOn[0].condition",
        "missing required field",
    );

    // Task-level cpu/memory given as numbers are normalized to strings.
    let td = with("/memory", serde_json::json!(1024)).unwrap();
    assert_eq!(td.memory.as_deref(), Some("1024"));
}

#[test]
fn malformed_json_names_line_and_column() {
    let e = parse_register_input("{\n  \"family\": \"x\",\n  oops\n}").unwrap_err();
    match &e {
        TaskDefinitionError::Syntax { line, column, .. } => {
            assert_eq!(*line, 3);
            assert_eq!(*column, 3);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        e.to_string()
            .starts_with("invalid JSON at line 3, column 3: "),
        "{e}"
    );
    assert_eq!(e.path(), "");
    let e = parse_register_input("[1, 2]").unwrap_err();
    assert_eq!(e.to_string(), "expected a JSON object, got an array");
}

#[test]
fn validation_errors() {
    use serde_json::json;
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        ("/family", json!(""), "family", "family is required"),
        ("/family", json!("bad family!"), "family", "letters, numbers, hyphens and underscores"),
        ("/family", json!("a".repeat(256)), "family", "at most 255"),
        ("/containerDefinitions", json!([]), "containerDefinitions", "at least one container"),
        ("/containerDefinitions/1/name", json!("web"), "containerDefinitions[1].name", "duplicate container name \"web\""),
        ("/containerDefinitions/1/name", json!("app.v2"), "containerDefinitions[1].name", "container name"),
        ("/containerDefinitions/0/image", json!(""), "containerDefinitions[0].image", "image is required"),
        ("/containerDefinitions/0/memoryReservation", json!(512), "containerDefinitions[0].memoryReservation", "memoryReservation (512 MiB) must not exceed memory (256 MiB)"),
        ("/containerDefinitions/0/memory", json!(4), "containerDefinitions[0].memory", "at least 6 MiB"),
        ("/containerDefinitions/0/portMappings/0/containerPort", json!(0), "containerDefinitions[0].portMappings[0].containerPort", "between 1 and 65535"),
        ("/containerDefinitions/0/portMappings/0/containerPort", json!(70000), "containerDefinitions[0].portMappings[0].containerPort", "between 1 and 65535"),
        ("/containerDefinitions/0/portMappings/0/hostPort", json!(-1), "containerDefinitions[0].portMappings[0].hostPort", "between 0 and 65535"),
        ("/containerDefinitions/0/portMappings/0/hostPort", json!(65536), "containerDefinitions[0].portMappings[0].hostPort", "between 0 and 65535"),
        ("/containerDefinitions/0/portMappings/1", json!({"containerPort": 81, "hostPort": 8080}), "containerDefinitions[0].portMappings[1].hostPort", "host port 8080/tcp is already used by containerDefinitions[0].portMappings[0].hostPort"),
        ("/containerDefinitions/1/portMappings/0/hostPort", json!(8080), "containerDefinitions[1].portMappings[0].hostPort", "unused"),
        ("/containerDefinitions/0/dependsOn/0/containerName", json!("nope"), "containerDefinitions[0].dependsOn[0].containerName", "unknown container \"nope\""),
        ("/containerDefinitions/0/dependsOn/0/containerName", json!("web"), "containerDefinitions[0].dependsOn[0].containerName", "itself"),
        ("/containerDefinitions/1/dependsOn", json!([{"containerName": "web", "condition": "START"}]), "containerDefinitions[1].dependsOn[0].containerName", "dependency cycle"),
        ("/containerDefinitions/1/links", json!(["web"]), "containerDefinitions[1].links[0]", "dependency cycle: web -> app -> web"),
        ("/containerDefinitions/0/links/0", json!("db:database"), "containerDefinitions[0].links[0]", "unknown container \"db\""),
        ("/containerDefinitions/1/healthCheck/command", json!([]), "containerDefinitions[1].healthCheck.command", "must not be empty"),
        ("/containerDefinitions/1/healthCheck/command", json!(["curl", "-f", "x"]), "containerDefinitions[1].healthCheck.command[0]", "CMD or CMD-SHELL"),
        ("/containerDefinitions/1/healthCheck/interval", json!(4), "containerDefinitions[1].healthCheck.interval", "between 5 and 300 seconds"),
        ("/containerDefinitions/1/healthCheck/interval", json!(301), "containerDefinitions[1].healthCheck.interval", "between 5 and 300"),
        ("/containerDefinitions/1/healthCheck/timeout", json!(1), "containerDefinitions[1].healthCheck.timeout", "between 2 and 60"),
        ("/containerDefinitions/1/healthCheck/timeout", json!(61), "containerDefinitions[1].healthCheck.timeout", "between 2 and 60"),
        ("/containerDefinitions/1/healthCheck/retries", json!(0), "containerDefinitions[1].healthCheck.retries", "between 1 and 10"),
        ("/containerDefinitions/1/healthCheck/retries", json!(11), "containerDefinitions[1].healthCheck.retries", "between 1 and 10"),
        ("/containerDefinitions/1/healthCheck/startPeriod", json!(-1), "containerDefinitions[1].healthCheck.startPeriod", "between 0 and 300"),
        ("/containerDefinitions/1/healthCheck/startPeriod", json!(301), "containerDefinitions[1].healthCheck.startPeriod", "between 0 and 300"),
        ("/containerDefinitions/0/stopTimeout", json!(-1), "containerDefinitions[0].stopTimeout", "between 0 and 120"),
        ("/containerDefinitions/0/stopTimeout", json!(121), "containerDefinitions[0].stopTimeout", "between 0 and 120"),
        ("/memory", json!("lots"), "memory", "task memory \"lots\""),
        ("/placementConstraints/0/type", json!("distinctInstance"), "placementConstraints[0].type", "memberOf"),
    ];
    for (pointer, value, path, msg) in cases {
        let res = with(pointer, value.clone());
        if msg == "unused" {
            // Same host port with a different protocol is fine...
            let td = res.unwrap_or_else(|e| panic!("{pointer}={value}: {e}"));
            // ...but the same protocol is not.
            let mut doc = serde_json::to_value(&td).unwrap();
            set_pointer(
                &mut doc,
                "/containerDefinitions/1/portMappings/0/protocol",
                json!("tcp"),
            );
            let td: TaskDefinition = serde_json::from_value(doc).unwrap();
            assert_err(&validate(&td).unwrap_err(), path, "already used");
            continue;
        }
        let e = res.expect_err(&format!("{pointer}={value} should fail"));
        assert_err(&e, path, msg);
        assert!(!e.to_string().ends_with('.'), "{e}");
    }
}

#[test]
fn validation_structural_errors() {
    let mut td = valid();
    td.container_definitions[1].health_check = None;
    let e = validate(&td).unwrap_err();
    assert_err(
        &e,
        "containerDefinitions[0].dependsOn[0].condition",
        "HEALTHY requires",
    );

    let mut td = valid();
    for c in &mut td.container_definitions {
        c.essential = Some(false);
    }
    assert_err(
        &validate(&td).unwrap_err(),
        "containerDefinitions",
        "essential",
    );

    let mut td = valid();
    let base = td.container_definitions[1].clone();
    for i in 0..10 {
        let mut c = base.clone();
        c.name = format!("extra{i}");
        c.port_mappings.clear();
        td.container_definitions.push(c);
    }
    assert_err(
        &validate(&td).unwrap_err(),
        "containerDefinitions",
        "at most 10 containers (got 12)",
    );

    // No memory anywhere: error, unless task-level memory is set.
    let mut td = valid();
    td.container_definitions[1].memory_reservation = None;
    let e = validate(&td).unwrap_err();
    assert_err(
        &e,
        "containerDefinitions[1].memory",
        "memory or memoryReservation is required",
    );
    td.memory = Some("1 GB".into());
    validate(&td).unwrap();
    assert_eq!(td.total_memory_reservation_mib(), 1024);

    let mut td = valid();
    td.container_definitions[0].port_mappings[0].container_port = None;
    assert_err(
        &validate(&td).unwrap_err(),
        "containerDefinitions[0].portMappings[0].containerPort",
        "required",
    );

    let e = TaskDefinitionError::invalid("", "whole document");
    assert_eq!(e.to_string(), "whole document");
    assert_eq!(e.message(), "whole document");
}

#[test]
fn container_definitions_form() {
    let json = r#"[{"name": "a", "image": "busybox", "memory": 32, "environmentFiles": []},
                   {"name": "b", "image": "busybox", "memory": "32"}]"#;
    let e = parse_container_definitions("fam", json).unwrap_err();
    assert_eq!(e.path(), "containerDefinitions[1].memory");
    let json =
        r#"[{"name": "a", "image": "busybox", "memory": 32, "environmentFiles": [{"value":"y"}]}]"#;
    let (td, warnings) = parse_container_definitions("fam", json).unwrap();
    assert_eq!(td.family, "fam");
    assert_eq!(warnings[0].path, "containerDefinitions[0].environmentFiles");
    validate(&td).unwrap();
    let e = parse_container_definitions("fam", r#"{"name": "a"}"#).unwrap_err();
    assert_eq!(e.path(), "containerDefinitions");
    let e = parse_container_definitions("fam", "[").unwrap_err();
    assert!(matches!(e, TaskDefinitionError::Syntax { .. }));
}

#[test]
fn resource_helpers() {
    let td = valid();
    assert_eq!(td.total_cpu(), 768);
    assert_eq!(td.total_memory_reservation_mib(), 128 + 192);
    assert_eq!(
        td.container_definitions[0].memory_reservation_mib(),
        Some(128)
    );
    let mut ports = td.static_host_ports();
    ports.sort();
    assert_eq!(ports, vec![(3000, Protocol::Udp), (8080, Protocol::Tcp)]);
    let mut td2 = td.clone();
    td2.cpu = Some("0.5 vCPU".into());
    assert_eq!(td2.total_cpu(), 512);
    td2.cpu = Some("2048".into());
    assert_eq!(td2.total_cpu(), 2048);
    td2.container_definitions[0].memory_reservation = None;
    assert_eq!(
        td2.container_definitions[0].memory_reservation_mib(),
        Some(256)
    );
    assert_eq!(parse_task_memory("2GB"), Some(2048));
    assert_eq!(parse_task_memory("0.5 gb"), Some(512));
    assert_eq!(parse_task_memory("GB"), None);
    assert_eq!(parse_task_memory("1e999 GB"), None);
    assert_eq!(parse_task_cpu("1 vcpu"), Some(1024));
    assert_eq!(parse_task_cpu("-1"), None);
}

#[test]
fn task_definition_ref() {
    let r = TaskDefinitionRef::parse("web-app").unwrap();
    assert_eq!((r.family.as_str(), r.revision), ("web-app", None));
    assert_eq!(r.to_string(), "web-app");
    let r: TaskDefinitionRef = "web_app:12".parse().unwrap();
    assert_eq!((r.family.as_str(), r.revision), ("web_app", Some(12)));
    assert_eq!(r.to_string(), "web_app:12");
    let arn = "arn:aws:ecs:eu-west-1:123456789012:task-definition/web-app:7";
    let r = TaskDefinitionRef::parse(arn).unwrap();
    assert_eq!((r.family.as_str(), r.revision), ("web-app", Some(7)));
    assert_eq!(
        r.arn_prefix.as_deref(),
        Some("arn:aws:ecs:eu-west-1:123456789012:task-definition/")
    );
    assert_eq!(r.to_string(), arn);
    for bad in [
        "",
        "web:",
        "web:0",
        "web:-1",
        "web:+1",
        "web:x",
        "we b",
        "web:1:2",
        "arn:aws:ecs:eu-west-1:1:service/web:1",
        "arn:aws",
        "arn:aws:ecs:r:a:task-definition/",
    ] {
        let e = TaskDefinitionRef::parse(bad).expect_err(bad);
        assert_eq!(e.path(), "taskDefinition");
    }
}

#[test]
fn overrides() {
    let td = valid();
    let o = parse_overrides(
        r#"{"containerOverrides": [{"name": "app", "command": ["migrate"],
              "environment": [{"name": "MODE", "value": "debug"}, {"name": "NEW", "value": "1"}],
              "memoryReservation": 300, "environmentFiles": [{"type": "s3", "value": "x"}]}],
            "memory": "2048", "taskRoleArn": "arn:aws:iam::1:role/other"}"#,
    )
    .unwrap();
    let out = apply_overrides(&td, &o).unwrap();
    let app = out.container("app").unwrap();
    assert_eq!(app.command, vec!["migrate"]);
    assert_eq!(app.env("MODE"), Some("debug"));
    assert_eq!(app.env("LOG"), Some("info"));
    assert_eq!(app.env("NEW"), Some("1"));
    assert_eq!(app.environment.len(), 3);
    assert_eq!(app.memory_reservation, Some(300));
    assert_eq!(out.memory.as_deref(), Some("2048"));
    assert_eq!(out.total_memory_reservation_mib(), 2048);
    assert_eq!(
        out.task_role_arn.as_deref(),
        Some("arn:aws:iam::1:role/other")
    );
    // Untouched container unchanged.
    assert_eq!(out.container_definitions[0], td.container_definitions[0]);

    let (_, warnings) = parse_overrides_with_warnings(
        r#"{"containerOverrides": [{"name": "app", "environmentFiles": [{"type": "s3", "value": "x"}]}], "typo": 1}"#,
    )
    .unwrap();
    let paths: Vec<&str> = warnings.iter().map(|w| w.path.as_str()).collect();
    assert_eq!(
        paths,
        vec!["containerOverrides[0].environmentFiles", "typo"]
    );

    let o =
        parse_overrides(r#"{"containerOverrides": [{"name": "app"}, {"name": "ghost"}]}"#).unwrap();
    let e = apply_overrides(&td, &o).unwrap_err();
    assert_err(
        &e,
        "containerOverrides[1].name",
        "no container named \"ghost\"",
    );

    let o =
        parse_overrides(r#"{"containerOverrides": [{"name": "app"}, {"name": "app"}]}"#).unwrap();
    assert_err(
        &apply_overrides(&td, &o).unwrap_err(),
        "containerOverrides[1].name",
        "duplicate",
    );

    let e = parse_overrides(r#"{"containerOverrides": [{"command": ["x"]}]}"#).unwrap_err();
    assert_err(&e, "containerOverrides[0].name", "missing required field");

    let e = parse_overrides(r#"{"containerOverrides": [{"name": "a", "cpu": "1"}]}"#).unwrap_err();
    assert_err(&e, "containerOverrides[0].cpu", "expected an integer");

    // Overrides producing an invalid definition are rejected.
    let o =
        parse_overrides(r#"{"containerOverrides": [{"name": "web", "memoryReservation": 512}]}"#)
            .unwrap();
    let e = apply_overrides(&td, &o).unwrap_err();
    assert_err(
        &e,
        "containerDefinitions[0].memoryReservation",
        "must not exceed memory",
    );

    // An empty command override clears the command.
    let o = parse_overrides(r#"{"containerOverrides": [{"name": "app", "command": []}]}"#).unwrap();
    assert!(apply_overrides(&td, &o)
        .unwrap()
        .container("app")
        .unwrap()
        .command
        .is_empty());
    assert_eq!(parse_overrides("{}").unwrap(), TaskOverride::default());
    assert!(parse_overrides("[]").is_err());
}

/// Tiny deterministic PRNG so the fuzz test needs no extra crates.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

fn exercise(json: &str) {
    if let Ok((td, _)) = parse_register_input(json) {
        let _ = validate(&td);
        let _ = td.total_cpu();
        let _ = td.total_memory_reservation_mib();
        let _ = td.static_host_ports();
        let _ = td.start_order();
        let again = serde_json::to_string(&td).unwrap();
        let (back, _) = parse_register_input(&again).expect("re-parse of own output");
        assert_eq!(back, td);
    }
    let _ = parse_container_definitions("f", json);
    if let Ok(o) = parse_overrides(json) {
        let _ = apply_overrides(&valid(), &o);
    }
}

fn pointers(v: &Value, prefix: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let p = format!("{prefix}/{k}");
                out.push(p.clone());
                pointers(child, p, out);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                let p = format!("{prefix}/{i}");
                out.push(p.clone());
                pointers(child, p, out);
            }
        }
        _ => {}
    }
}

#[test]
fn fuzzish_inputs_never_panic() {
    // Truncations.
    let bytes = VALID.as_bytes();
    for end in 0..bytes.len() {
        if let Ok(s) = std::str::from_utf8(&bytes[..end]) {
            exercise(s);
        }
    }
    // Random garbling.
    let mut rng = Lcg(42);
    let alphabet = b"{}[]\":,0123456789-.eE truefalsnul\\x";
    for _ in 0..300 {
        let mut b = bytes.to_vec();
        for _ in 0..(1 + rng.next() % 4) {
            let pos = (rng.next() as usize) % b.len();
            b[pos] = alphabet[(rng.next() as usize) % alphabet.len()];
        }
        exercise(&String::from_utf8_lossy(&b));
    }
    // Every value replaced by values of every type.
    let doc: Value = serde_json::from_str(VALID).unwrap();
    let mut ptrs = Vec::new();
    pointers(&doc, String::new(), &mut ptrs);
    let replacements = [
        serde_json::json!(null),
        serde_json::json!(true),
        serde_json::json!(0),
        serde_json::json!(-1),
        serde_json::json!(i64::MAX),
        serde_json::json!(u64::MAX),
        serde_json::json!(1.5),
        serde_json::json!(1e300),
        serde_json::json!(""),
        serde_json::json!("x"),
        serde_json::json!([]),
        serde_json::json!([1, "a", null]),
        serde_json::json!({}),
        serde_json::json!({"a": {"b": []}}),
    ];
    for p in &ptrs {
        for r in &replacements {
            let mut d = doc.clone();
            set_pointer(&mut d, p, r.clone());
            exercise(&d.to_string());
        }
    }
    // Odd top-level documents.
    for s in [
        "",
        " ",
        "null",
        "1",
        "\"x\"",
        "[]",
        "{}",
        "{\"taskDefinition\": 1}",
        "{\"taskDefinition\": {}}",
        "{\"taskDefinition\": null}",
        "{\"tags\": 5, \"taskDefinition\": {}}",
        &"[".repeat(10_000),
        &"{\"a\":".repeat(5_000),
    ] {
        exercise(s);
    }
}

#[test]
fn misspelt_fields_are_named_with_the_field_meant() {
    assert!(parse::is_misspelling("memroy", "memory"));
    assert!(parse::is_misspelling("memmory", "memory"));
    assert!(parse::is_misspelling("imgae", "image"));
    assert!(parse::is_misspelling("enviroment", "environment"));
    assert!(!parse::is_misspelling("cpu", "user"));
    assert!(!parse::is_misspelling("links", "image"));
    assert!(!parse::is_misspelling("hostname", "command"));
    let json = r#"{"family": "f", "containerDefinitions": [
        {"name": "a", "image": "busybox", "memroy": 64, "essential": true}]}"#;
    let (_, warnings) = parse_register_input(json).unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].path, "containerDefinitions[0].memroy");
    assert!(
        warnings[0].message.contains("did you mean \"memory\""),
        "{warnings:?}"
    );
}

#[test]
fn image_repositories_with_upper_case_are_refused_at_registration() {
    use validate::upper_case_repository as upper;
    assert_eq!(upper("My/Web:1"), Some("My/Web"));
    assert_eq!(upper("nginx:Latest"), None, "a tag may have upper case");
    assert_eq!(upper("Registry.Lab:5000/web:1"), None, "so may the host");
    assert_eq!(upper("registry.lab:5000/Web:1"), Some("Web"));
    assert_eq!(upper("localhost/web@sha256:AB"), None);
    assert_eq!(upper("busybox"), None);
    let json = r#"{"family": "f", "containerDefinitions": [
        {"name": "a", "image": "Busybox:1", "memory": 64}]}"#;
    let (td, _) = parse_register_input(json).unwrap();
    let error = validate(&td).unwrap_err();
    assert_eq!(error.path(), "containerDefinitions[0].image");
    assert!(
        error.message().contains("upper case") && error.message().contains("\"busybox:1\""),
        "{error}"
    );
}

#[test]
fn secrets_are_references_checked_by_path() {
    let json = r#"{"family": "f", "containerDefinitions": [{
        "name": "a", "image": "busybox", "memory": 32,
        "environment": [{"name": "MODE", "value": "prod"}],
        "secrets": [{"name": "DB_PASSWORD", "valueFrom": "db-password"},
                    {"name": "API_KEY", "valueFrom": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:lab/api"}]
    }]}"#;
    let (td, warnings) = parse_register_input(json).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    validate(&td).unwrap();
    let secrets = &td.container_definitions[0].secrets;
    assert_eq!(secret_name_from(&secrets[1].value_from).unwrap(), "lab/api");
    for (secret, path, words) in [
        (
            r#"{"name": "X", "valueFrom": "arn:aws:ssm:r:1:parameter/x"}"#,
            "containerDefinitions[0].secrets[0].valueFrom",
            "not a Secrets Manager ARN",
        ),
        (
            r#"{"name": "X", "valueFrom": "has space"}"#,
            "containerDefinitions[0].secrets[0].valueFrom",
            "not a secret name",
        ),
        (
            r#"{"name": "", "valueFrom": "x"}"#,
            "containerDefinitions[0].secrets[0].name",
            "must not be empty",
        ),
        (
            r#"{"name": "MODE", "valueFrom": "x"}"#,
            "containerDefinitions[0].secrets[0].name",
            "also set in environment",
        ),
    ] {
        let json = format!(
            r#"{{"family": "f", "containerDefinitions": [{{"name": "a", "image": "busybox", "memory": 32,
                "environment": [{{"name": "MODE", "value": "prod"}}], "secrets": [{secret}]}}]}}"#
        );
        let (td, _) = parse_register_input(&json).unwrap();
        let error = validate(&td).unwrap_err();
        assert_eq!(error.path(), path, "{secret}");
        assert!(error.to_string().contains(words), "{error}");
    }
    let missing = parse_register_input(
        r#"{"family": "f", "containerDefinitions": [{"name": "a", "image": "busybox", "memory": 32, "secrets": [{"name": "X"}]}]}"#,
    )
    .unwrap_err();
    assert_eq!(
        missing.path(),
        "containerDefinitions[0].secrets[0].valueFrom"
    );
}

//! Printing results: JSON exactly as the server returned it (the `aws ecs`
//! shape), or tables for people.

use serde_json::Value;

use super::OutputFormat;
use crate::model::{ControlPlaneStatus, ServerMember};
use crate::store::Change;
use crate::vocab::ids::last_segment;

/// Prints in the chosen format.
pub struct Output {
    format: OutputFormat,
}

/// Prints rows as aligned columns.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.len());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{:<width$}", c, width = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push('\n');
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

fn text(value: &Value, key: &str) -> String {
    match &value[key] {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_string(),
        other => other.to_string(),
    }
}

impl Output {
    /// An output in `format`.
    pub fn new(format: OutputFormat) -> Output {
        Output { format }
    }

    /// Whether the output is JSON (`--output json`).
    pub fn is_json(&self) -> bool {
        self.format == OutputFormat::Json
    }

    /// Prints a JSON answer as it is.
    pub fn json(&self, value: &Value) {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    }

    /// The answer of an ECR action: a table of repositories or images.
    pub fn ecr(&self, action: &str, answer: &Value) {
        if self.format == OutputFormat::Json {
            return self.json(answer);
        }
        let list = |key: &str| answer[key].as_array().cloned().unwrap_or_default();
        match action {
            "CreateRepository" | "DeleteRepository" | "DescribeRepositories" => {
                let repositories = match answer.get("repositories") {
                    Some(_) => list("repositories"),
                    None => vec![answer["repository"].clone()],
                };
                let rows: Vec<Vec<String>> = repositories
                    .iter()
                    .map(|r| vec![text(r, "repositoryName"), text(r, "repositoryUri")])
                    .collect();
                println!("{}", table(&["REPOSITORY", "URI"], &rows));
            }
            "ListImages" | "BatchDeleteImage" => {
                let rows: Vec<Vec<String>> = list("imageIds")
                    .iter()
                    .map(|i| vec![text(i, "imageDigest"), text(i, "imageTag")])
                    .collect();
                println!("{}", table(&["DIGEST", "TAG"], &rows));
                for failure in list("failures") {
                    eprintln!(
                        "failed: {} ({})",
                        text(&failure, "failureReason"),
                        text(&failure, "failureCode")
                    );
                }
            }
            "DescribeImages" => {
                let join = |v: &Value, key: &str| {
                    v[key]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(Value::as_str)
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .unwrap_or_default()
                };
                let rows: Vec<Vec<String>> = list("imageDetails")
                    .iter()
                    .map(|i| {
                        vec![
                            text(i, "imageDigest"),
                            join(i, "imageTags"),
                            i["imageSizeInBytes"].to_string(),
                            join(i, "platforms"),
                        ]
                    })
                    .collect();
                println!("{}", table(&["DIGEST", "TAGS", "SIZE", "PLATFORMS"], &rows));
            }
            "CreatePullThroughCacheRule"
            | "DeletePullThroughCacheRule"
            | "DescribePullThroughCacheRules" => {
                let rules = match answer.get("pullThroughCacheRules") {
                    Some(_) => list("pullThroughCacheRules"),
                    None => vec![answer.clone()],
                };
                let rows: Vec<Vec<String>> = rules
                    .iter()
                    .map(|r| {
                        vec![
                            text(r, "ecrRepositoryPrefix"),
                            text(r, "upstreamRegistryUrl"),
                        ]
                    })
                    .collect();
                println!("{}", table(&["PREFIX", "UPSTREAM"], &rows));
            }
            "GarbageCollect" => {
                let rows: Vec<Vec<String>> = list("collectable")
                    .iter()
                    .map(|i| vec![text(i, "repositoryName"), text(i, "digest")])
                    .collect();
                println!("{}", table(&["REPOSITORY", "BLOB"], &rows));
                if answer["dryRun"].as_bool() == Some(true) {
                    println!(
                        "dry run: {} blob link(s), {} bytes would go",
                        rows.len(),
                        answer["collectableBytes"]
                    );
                } else {
                    println!(
                        "removed {} blob link(s), {} bytes; every server deletes the files within a minute",
                        answer["unlinkedBlobs"], answer["unlinkedBytes"]
                    );
                }
            }
            _ => self.json(answer),
        }
    }

    /// The answer of an ECS action.
    pub fn action(&self, action: &str, answer: &Value) {
        if self.format == OutputFormat::Json {
            return self.json(answer);
        }
        match action {
            "CreateCluster" | "DeleteCluster" => {
                self.clusters(std::slice::from_ref(&answer["cluster"]), &[])
            }
            "DescribeClusters" => self.clusters(
                answer["clusters"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default(),
                answer["failures"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default(),
            ),
            "ListClusters" => {
                for arn in answer["clusterArns"].as_array().into_iter().flatten() {
                    println!("{}", arn.as_str().unwrap_or_default());
                }
            }
            "RunTask" | "DescribeTasks" => {
                self.tasks(
                    answer["tasks"]
                        .as_array()
                        .map(Vec::as_slice)
                        .unwrap_or_default(),
                );
                self.failures(answer);
                if let Some(explanation) = answer["explanation"].as_array() {
                    let rows: Vec<Vec<String>> = explanation
                        .iter()
                        .map(|v| vec![text(v, "instance_id"), text(v, "verdict")])
                        .collect();
                    println!("{}", table(&["INSTANCE", "PLACEMENT"], &rows));
                }
            }
            "StopTask" => self.tasks(std::slice::from_ref(&answer["task"])),
            "ExplainTask" => {
                self.tasks(std::slice::from_ref(&answer["task"]));
                let needs = &answer["needs"];
                println!(
                    "\nneeds {} CPU units, {} MiB memory, host ports {}",
                    needs["cpu"],
                    needs["memoryMiB"],
                    needs["hostPorts"]
                        .as_array()
                        .filter(|p| !p.is_empty())
                        .map(|p| p
                            .iter()
                            .map(|v| v.as_str().unwrap_or("?"))
                            .collect::<Vec<_>>()
                            .join(", "))
                        .unwrap_or_else(|| "none".into())
                );
                let described = |items: &Value, detail: &str| -> String {
                    let list: Vec<String> = items
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|item| match item[detail].as_str() {
                            Some(detail) => format!("{}({detail})", text(item, "type")),
                            None => text(item, "type"),
                        })
                        .collect();
                    if list.is_empty() {
                        "none".into()
                    } else {
                        list.join(", ")
                    }
                };
                println!(
                    "placed with strategy {}; constraints {}",
                    described(&answer["placementStrategy"], "field"),
                    described(&answer["placementConstraints"], "expression")
                );
                let rows: Vec<Vec<String>> = answer["explanation"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|v| vec![text(v, "instance_id"), text(v, "verdict")])
                    .collect();
                println!("{}", table(&["INSTANCE", "VERDICT"], &rows));
            }
            "CreateService" | "UpdateService" | "DeleteService" => {
                self.services(std::slice::from_ref(&answer["service"]))
            }
            "DescribeServices" => {
                let services = answer["services"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                self.services(services);
                for service in services {
                    println!(
                        "\nevents of {} (newest first):",
                        text(service, "serviceName")
                    );
                    for event in service["events"].as_array().into_iter().flatten().take(10) {
                        println!("  {}", text(event, "message"));
                    }
                }
                self.failures(answer);
            }
            "ListServices" => {
                for arn in answer["serviceArns"].as_array().into_iter().flatten() {
                    println!("{}", arn.as_str().unwrap_or_default());
                }
            }
            "ListTasks" | "ListTaskDefinitions" | "ListContainerInstances" => {
                let key = match action {
                    "ListTasks" => "taskArns",
                    "ListTaskDefinitions" => "taskDefinitionArns",
                    _ => "containerInstanceArns",
                };
                for arn in answer[key].as_array().into_iter().flatten() {
                    println!("{}", arn.as_str().unwrap_or_default());
                }
            }
            "RegisterTaskDefinition" | "DescribeTaskDefinition" | "DeregisterTaskDefinition" => {
                self.task_definitions(std::slice::from_ref(&answer["taskDefinition"]))
            }
            "DeleteTaskDefinitions" => {
                self.task_definitions(
                    answer["taskDefinitions"]
                        .as_array()
                        .map(Vec::as_slice)
                        .unwrap_or_default(),
                );
                self.failures(answer);
            }
            "DescribeContainerInstances" | "UpdateContainerInstancesState" => {
                self.instances(
                    answer["containerInstances"]
                        .as_array()
                        .map(Vec::as_slice)
                        .unwrap_or_default(),
                );
                self.failures(answer);
            }
            _ => self.json(answer),
        }
    }

    fn services(&self, services: &[Value]) {
        let mut rows = Vec::new();
        for service in services {
            let deployments = service["deployments"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for (i, deployment) in deployments.iter().enumerate() {
                let first = i == 0;
                rows.push(vec![
                    if first {
                        text(service, "serviceName")
                    } else {
                        String::new()
                    },
                    if first {
                        text(service, "status")
                    } else {
                        String::new()
                    },
                    if first {
                        format!(
                            "{}/{}",
                            text(service, "runningCount"),
                            text(service, "desiredCount")
                        )
                    } else {
                        String::new()
                    },
                    text(deployment, "id"),
                    text(deployment, "status"),
                    text(deployment, "taskDefinition")
                        .rsplit('/')
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                    format!(
                        "{}/{}",
                        text(deployment, "runningCount"),
                        text(deployment, "desiredCount")
                    ),
                    text(deployment, "rolloutState"),
                ]);
            }
            if deployments.is_empty() {
                rows.push(vec![
                    text(service, "serviceName"),
                    text(service, "status"),
                    format!(
                        "{}/{}",
                        text(service, "runningCount"),
                        text(service, "desiredCount")
                    ),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                ]);
            }
        }
        println!(
            "{}",
            table(
                &[
                    "SERVICE",
                    "STATUS",
                    "RUNNING",
                    "DEPLOYMENT",
                    "ROLE",
                    "DEFINITION",
                    "RUNNING",
                    "ROLLOUT"
                ],
                &rows
            )
        );
    }

    fn failures(&self, answer: &Value) {
        for failure in answer["failures"].as_array().into_iter().flatten() {
            let detail = failure["detail"]
                .as_str()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default();
            eprintln!(
                "failure: {}: {}{detail}",
                text(failure, "arn"),
                text(failure, "reason")
            );
        }
    }

    fn tasks(&self, tasks: &[Value]) {
        let rows: Vec<Vec<String>> = tasks
            .iter()
            .map(|t| {
                let id = text(t, "taskArn")
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let definition = text(t, "taskDefinitionArn")
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let instance = t["containerInstanceArn"]
                    .as_str()
                    .map(|a| last_segment(a).chars().take(12).collect())
                    .unwrap_or_else(|| "-".to_string());
                let ports: Vec<String> = t["containers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|c| c["networkBindings"].as_array().cloned().unwrap_or_default())
                    .map(|b| {
                        format!(
                            "{}->{}/{}",
                            b["hostPort"],
                            b["containerPort"],
                            b["protocol"].as_str().unwrap_or("tcp")
                        )
                    })
                    .collect();
                let exits: Vec<String> = t["containers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|c| !c["exitCode"].is_null())
                    .map(|c| format!("{}={}", text(c, "name"), c["exitCode"]))
                    .collect();
                let stopped = match (
                    t["stopCode"].as_str(),
                    t["stoppedReason"]
                        .as_str()
                        .or(t["placementReason"].as_str()),
                ) {
                    (Some(code), Some(reason)) => format!("{code}: {reason}"),
                    (Some(code), None) => code.to_string(),
                    (None, Some(reason)) => reason.to_string(),
                    (None, None) => "-".to_string(),
                };
                vec![
                    id,
                    definition,
                    text(t, "lastStatus"),
                    text(t, "desiredStatus"),
                    text(t, "healthStatus"),
                    instance,
                    if ports.is_empty() {
                        "-".into()
                    } else {
                        ports.join(",")
                    },
                    if exits.is_empty() {
                        "-".into()
                    } else {
                        exits.join(",")
                    },
                    stopped,
                ]
            })
            .collect();
        println!(
            "{}",
            table(
                &[
                    "TASK",
                    "DEFINITION",
                    "LAST",
                    "DESIRED",
                    "HEALTH",
                    "INSTANCE",
                    "PORTS",
                    "EXIT",
                    "STOPPED"
                ],
                &rows
            )
        );
    }

    fn task_definitions(&self, definitions: &[Value]) {
        let rows: Vec<Vec<String>> = definitions
            .iter()
            .map(|d| {
                let containers: Vec<String> = d["containerDefinitions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| format!("{} ({})", text(c, "name"), text(c, "image")))
                    .collect();
                vec![
                    format!("{}:{}", text(d, "family"), text(d, "revision")),
                    text(d, "status"),
                    containers.join(", "),
                ]
            })
            .collect();
        println!(
            "{}",
            table(&["TASK DEFINITION", "STATUS", "CONTAINERS"], &rows)
        );
    }

    fn instances(&self, instances: &[Value]) {
        let resource = |v: &Value, list: &str, name: &str| -> String {
            v[list]
                .as_array()
                .into_iter()
                .flatten()
                .find(|r| r["name"] == name)
                .map(|r| r["integerValue"].to_string())
                .unwrap_or_else(|| "-".into())
        };
        let rows: Vec<Vec<String>> = instances
            .iter()
            .map(|i| {
                let arch = i["attributes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|a| a["name"] == "ecs.cpu-architecture")
                    .map(|a| text(a, "value"))
                    .unwrap_or_else(|| "-".into());
                vec![
                    text(i, "ec2InstanceId"),
                    text(i, "hostname"),
                    text(i, "status"),
                    text(i, "agentConnected"),
                    arch,
                    format!(
                        "{}/{}",
                        resource(i, "remainingResources", "CPU"),
                        resource(i, "registeredResources", "CPU")
                    ),
                    format!(
                        "{}/{}",
                        resource(i, "remainingResources", "MEMORY"),
                        resource(i, "registeredResources", "MEMORY")
                    ),
                    text(i, "runningTasksCount"),
                ]
            })
            .collect();
        println!(
            "{}",
            table(
                &[
                    "INSTANCE",
                    "HOST",
                    "STATUS",
                    "CONNECTED",
                    "ARCH",
                    "CPU FREE",
                    "MEM FREE",
                    "RUNNING"
                ],
                &rows
            )
        );
    }

    fn clusters(&self, clusters: &[Value], failures: &[Value]) {
        let rows: Vec<Vec<String>> = clusters
            .iter()
            .map(|c| {
                vec![
                    text(c, "clusterName"),
                    text(c, "status"),
                    text(c, "registeredContainerInstancesCount"),
                    text(c, "runningTasksCount"),
                    text(c, "pendingTasksCount"),
                    text(c, "activeServicesCount"),
                ]
            })
            .collect();
        println!(
            "{}",
            table(
                &[
                    "NAME",
                    "STATUS",
                    "INSTANCES",
                    "RUNNING",
                    "PENDING",
                    "SERVICES"
                ],
                &rows
            )
        );
        for failure in failures {
            eprintln!("{}: {}", text(failure, "arn"), text(failure, "reason"));
        }
    }

    /// `orc cluster status`.
    pub fn cluster_status(&self, status: &ControlPlaneStatus) {
        if self.format == OutputFormat::Json {
            let members: Vec<Value> = status.members.iter().map(member_json).collect();
            return self.json(&serde_json::json!({
                "controlPlaneId": status.cluster_id,
                "answeringNodeId": status.answering_node_id.to_string(),
                "leaderId": status.leader_id.to_string(),
                "leaderAddress": status.leader_address,
                "term": status.term,
                "commitIndex": status.commit_index,
                "appliedIndex": status.applied_index,
                "snapshotIndex": status.snapshot_index,
                "revision": status.revision,
                "members": members,
            }));
        }
        println!("control plane {}", status.cluster_id);
        println!(
            "leader {} at {}, term {}, commit {}, applied {}, snapshot {}, revision {}",
            status.leader_id,
            if status.leader_address.is_empty() {
                "-"
            } else {
                &status.leader_address
            },
            status.term,
            status.commit_index,
            status.applied_index,
            status.snapshot_index,
            status.revision
        );
        self.member_table(&status.members);
    }

    /// One watched change, on one line: a JSON object, or the revision, the
    /// action, the subjects and the outcome.
    pub fn change(&self, change: &Change) {
        if self.format == OutputFormat::Json {
            println!("{}", serde_json::to_string(change).unwrap_or_default());
        } else {
            println!("{}", change_line(change));
        }
    }

    /// Members after a membership change.
    pub fn members(&self, cluster_id: &str, members: &[ServerMember]) {
        if self.format == OutputFormat::Json {
            let members: Vec<Value> = members.iter().map(member_json).collect();
            return self
                .json(&serde_json::json!({"controlPlaneId": cluster_id, "members": members}));
        }
        self.member_table(members);
    }

    fn member_table(&self, members: &[ServerMember]) {
        let rows: Vec<Vec<String>> = members
            .iter()
            .map(|m| {
                vec![
                    m.id.to_string(),
                    m.address.clone(),
                    m.role.clone(),
                    if m.voter { "yes" } else { "no" }.to_string(),
                    m.matched_index.to_string(),
                    if !m.failure.is_empty() {
                        format!("failed: {}", m.failure)
                    } else if m.healthy {
                        "healthy".to_string()
                    } else {
                        "unreachable".to_string()
                    },
                ]
            })
            .collect();
        println!(
            "{}",
            table(
                &["ID", "ADDRESS", "ROLE", "VOTER", "MATCHED", "HEALTH"],
                &rows
            )
        );
    }
}

/// A watched change as a table line: `42  RunTask  cluster/default task/abc  ok`,
/// with the error instead of `ok` when the command was refused.
pub fn change_line(change: &Change) -> String {
    let subjects = if change.subjects.is_empty() {
        "-".to_string()
    } else {
        change.subjects.join(" ")
    };
    let outcome = match &change.error {
        Some(error) => format!("refused: {error}"),
        None => "ok".to_string(),
    };
    format!(
        "{:<8}  {:<29}  {subjects}  {outcome}",
        change.revision, change.action
    )
}

fn member_json(member: &ServerMember) -> Value {
    serde_json::json!({
        "id": member.id.to_string(),
        "address": member.address,
        "role": member.role,
        "voter": member.voter,
        "matchedIndex": member.matched_index,
        "healthy": member.healthy,
        "failure": member.failure,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_one_line_with_its_outcome() {
        let mut change = Change {
            revision: 42,
            raft_index: 57,
            action: "RunTask".into(),
            request_id: "r".into(),
            subjects: vec!["cluster/default".into(), "task/abc".into()],
            error: None,
        };
        assert_eq!(
            change_line(&change),
            "42        RunTask                        cluster/default task/abc  ok"
        );
        change.subjects.clear();
        change.error = Some("cluster not found: \"x\"".into());
        assert_eq!(
            change_line(&change),
            "42        RunTask                        -  refused: cluster not found: \"x\""
        );
        let json = serde_json::to_value(&change).unwrap();
        assert_eq!(json["raftIndex"], 57);
        assert_eq!(json["requestId"], "r");
        assert_eq!(json["error"], "cluster not found: \"x\"");
    }
}

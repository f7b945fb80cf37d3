//! Printing results: JSON exactly as the server returned it (the `aws ecs`
//! shape), or tables for people.

use serde_json::Value;

use super::OutputFormat;
use crate::proto::{ClusterStatusResponse, Member};

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

    fn json(&self, value: &Value) {
        println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
    }

    /// The answer of an ECS action.
    pub fn action(&self, action: &str, answer: &Value) {
        if self.format == OutputFormat::Json {
            return self.json(answer);
        }
        match action {
            "CreateCluster" | "DeleteCluster" => self.clusters(std::slice::from_ref(&answer["cluster"]), &[]),
            "DescribeClusters" => self.clusters(
                answer["clusters"].as_array().map(Vec::as_slice).unwrap_or_default(),
                answer["failures"].as_array().map(Vec::as_slice).unwrap_or_default(),
            ),
            "ListClusters" => {
                for arn in answer["clusterArns"].as_array().into_iter().flatten() {
                    println!("{}", arn.as_str().unwrap_or_default());
                }
            }
            _ => self.json(answer),
        }
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
        println!("{}", table(&["NAME", "STATUS", "INSTANCES", "RUNNING", "PENDING", "SERVICES"], &rows));
        for failure in failures {
            eprintln!("{}: {}", text(failure, "arn"), text(failure, "reason"));
        }
    }

    /// `orc cluster status`.
    pub fn cluster_status(&self, status: &ClusterStatusResponse) {
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
            if status.leader_address.is_empty() { "-" } else { &status.leader_address },
            status.term,
            status.commit_index,
            status.applied_index,
            status.snapshot_index,
            status.revision
        );
        self.member_table(&status.members);
    }

    /// Members after a membership change.
    pub fn members(&self, cluster_id: &str, members: &[Member]) {
        if self.format == OutputFormat::Json {
            let members: Vec<Value> = members.iter().map(member_json).collect();
            return self.json(&serde_json::json!({"controlPlaneId": cluster_id, "members": members}));
        }
        self.member_table(members);
    }

    fn member_table(&self, members: &[Member]) {
        let rows: Vec<Vec<String>> = members
            .iter()
            .map(|m| {
                vec![
                    m.id.to_string(),
                    m.address.clone(),
                    m.role.clone(),
                    if m.voter { "yes" } else { "no" }.to_string(),
                    m.matched_index.to_string(),
                    if m.healthy { "healthy" } else { "unreachable" }.to_string(),
                ]
            })
            .collect();
        println!("{}", table(&["ID", "ADDRESS", "ROLE", "VOTER", "MATCHED", "HEALTH"], &rows));
    }
}

fn member_json(member: &Member) -> Value {
    serde_json::json!({
        "id": member.id.to_string(),
        "address": member.address,
        "role": member.role,
        "voter": member.voter,
        "matchedIndex": member.matched_index,
        "healthy": member.healthy,
    })
}

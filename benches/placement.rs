//! Placement throughput benchmark (issue 4): tasks placed AND committed per
//! second into 1,000 simulated container instances, through a real
//! one-server control plane (Raft log on sled, fsync per Ready), compared
//! with the 3,750 placements/s of Nomad's published C1M run. Also the pure
//! `placement::place` rate without Raft, for reference.
//!
//! Run: `cargo bench --bench placement` (release build). Prints a table.

use std::time::{Duration, Instant};

use orc::model::{Attribute, InstanceRegistration};
use orc::scheduler::placement::{self, InstanceStatus, InstanceView, TaskDemand};
use orc::wire::proto::agent_api_client::AgentApiClient;
use orc::wire::proto::{HeartbeatRequest, RegisterInstanceRequest};
use serde_json::json;

const INSTANCES: usize = 1_000;
const NOMAD_C1M_PER_SECOND: f64 = 3_750.0;

fn pure_placement_rate() -> f64 {
    let views: Vec<InstanceView> = (0..INSTANCES)
        .map(|i| InstanceView {
            id: format!("i-{i:05}"),
            status: InstanceStatus::Active,
            attributes: [
                ("ecs.cpu-architecture".to_string(), "arm64".to_string()),
                (
                    "ecs.availability-zone".to_string(),
                    format!("rack-{}", i % 10),
                ),
            ]
            .into_iter()
            .collect(),
            remaining_cpu: 4096,
            remaining_memory_mib: 8192,
            used_ports: Default::default(),
            tasks_by_group: Default::default(),
            running_tasks_count: 0,
        })
        .collect();
    let demand = TaskDemand {
        group: "service:web".into(),
        cpu: 64,
        memory_mib: 64,
        static_ports: vec![],
        architectures: None,
    };
    let strategies = placement::default_service_strategies();
    let started = Instant::now();
    let mut placed = 0;
    while started.elapsed() < Duration::from_secs(2) {
        let outcome = placement::place(&demand, 1000, &views, &strategies, &[], placed as u64);
        placed += outcome.placements.len();
    }
    placed as f64 / started.elapsed().as_secs_f64()
}

async fn committed_placement_rate() -> anyhow::Result<(f64, usize, f64)> {
    let dir = tempfile::tempdir()?;
    let options = orc::server::ServerOptions::new(dir.path().join("server"), "127.0.0.1:0".into());
    let mut options = options;
    options.bootstrap = true;
    let server = orc::server::start(options).await?;
    let endpoint = server.local_address.to_string();
    let mut status = server.raft.watch_status();
    status
        .wait_for(|s| s.applied_index > 1 && s.leader_id != 0)
        .await?;
    let client = orc::client::Client::new(&endpoint)?;
    // Wait for InitControlPlane (the default cluster).
    for _ in 0..100 {
        if client
            .call("DescribeClusters", json!({}))
            .await
            .map(|(a, _)| a["clusters"].as_array().is_some_and(|c| !c.is_empty()))
            .unwrap_or(false)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    eprintln!("registering {INSTANCES} simulated container instances");
    let mut agent = AgentApiClient::new(orc::client::channel(&endpoint)?);
    let mut ids = Vec::new();
    for i in 0..INSTANCES {
        let registration = InstanceRegistration {
            hostname: format!("sim-{i}"),
            cpu: 4096,
            memory_mib: 8192,
            reserved_ports: vec![22],
            attributes: vec![
                Attribute {
                    name: "ecs.cpu-architecture".into(),
                    value: Some("arm64".into()),
                },
                Attribute {
                    name: "ecs.availability-zone".into(),
                    value: Some(format!("rack-{}", i % 10)),
                },
            ],
            agent_version: "bench".into(),
            docker_version: "bench".into(),
        };
        let answer = agent
            .register_container_instance(RegisterInstanceRequest {
                cluster: "default".into(),
                container_instance_id: String::new(),
                instance_json: serde_json::to_string(&registration)?,
                agent_session: String::new(),
            })
            .await?
            .into_inner();
        ids.push(answer.container_instance_id);
    }
    // Keep the simulated instances connected while we measure.
    let heartbeat_ids = ids.clone();
    let heartbeat_endpoint = endpoint.clone();
    let heartbeats = tokio::spawn(async move {
        let mut agent = AgentApiClient::new(orc::client::channel(&heartbeat_endpoint).unwrap());
        loop {
            for id in &heartbeat_ids {
                let _ = agent
                    .heartbeat(HeartbeatRequest {
                        cluster: "default".into(),
                        container_instance_id: id.clone(),
                        running_task_ids: vec![],
                        agent_session: String::new(),
                    })
                    .await;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    });

    client
        .call(
            "RegisterTaskDefinition",
            json!({"family": "bench", "containerDefinitions": [{"name": "web", "image": "bench", "cpu": 32, "memory": 32}]}),
        )
        .await?;

    // Run-task from 16 concurrent clients, 10 tasks per call, for 5 seconds.
    eprintln!("placing with run-task from 16 clients for 5 s");
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..16 {
        let client = client.clone();
        workers.push(tokio::spawn(async move {
            let mut placed = 0usize;
            while started.elapsed() < Duration::from_secs(5) {
                let (answer, _) = client
                    .call("RunTask", json!({"taskDefinition": "bench", "count": 10}))
                    .await
                    .expect("run-task");
                placed += answer["tasks"].as_array().map(Vec::len).unwrap_or(0);
            }
            placed
        }));
    }
    let mut run_task_placed = 0;
    for worker in workers {
        run_task_placed += worker.await?;
    }
    let run_task_rate = run_task_placed as f64 / started.elapsed().as_secs_f64();

    // A service asking for 10,000 tasks at once: the leader's controller places and commits them.
    eprintln!("placing 10,000 tasks for one service");
    let before = server.raft.store().read(|s| s.tasks.len());
    let started = Instant::now();
    client
        .call(
            "CreateService",
            json!({"serviceName": "bench", "taskDefinition": "bench", "desiredCount": 10_000}),
        )
        .await?;
    let target = before + 10_000;
    let deadline = Instant::now() + Duration::from_secs(120);
    while server.raft.store().read(|s| s.tasks.len()) < target {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the service did not place 10,000 tasks in 120 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let service_rate = 10_000.0 / started.elapsed().as_secs_f64();
    heartbeats.abort();
    server.stop();
    Ok((run_task_rate, run_task_placed, service_rate))
}

fn main() -> anyhow::Result<()> {
    let pure = pure_placement_rate();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (run_task_rate, run_task_placed, service_rate) =
        runtime.block_on(committed_placement_rate())?;
    println!(
        "placement into {INSTANCES} simulated instances (nproc {})",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!(
        "{:<58} {:>12} {:>14}",
        "figure", "placements/s", "vs Nomad C1M"
    );
    println!(
        "{:<58} {:>12.0} {:>13.1}x",
        "pure placement::place (no Raft), spread x2",
        pure,
        pure / NOMAD_C1M_PER_SECOND
    );
    println!(
        "{:<58} {:>12.0} {:>13.1}x",
        format!("run-task, 16 clients x 10 tasks/call, committed ({run_task_placed})"),
        run_task_rate,
        run_task_rate / NOMAD_C1M_PER_SECOND
    );
    println!(
        "{:<58} {:>12.0} {:>13.1}x",
        "one service of 10,000 tasks, committed",
        service_rate,
        service_rate / NOMAD_C1M_PER_SECOND
    );
    Ok(())
}

//! Carries out the reconciler's actions through the [`Runtime`] trait.
//!
//! [`Executor::run_batch`] runs one task's actions in order and stops at the
//! first failure, which it returns as an [`Outcome`] for the worker to
//! remember: a pull, create or start failure makes the task fail to start
//! (with the runtime's ECS-worded error as the reason); an unreachable engine
//! only means "try again later"; a refused subnet is skipped next time.
//! Stops and removals never fail a batch: what they could not do is seen and
//! retried on the next pass.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::agent::reconcile::Action;
use crate::agent::runtime::{PullBehavior, Runtime, RuntimeError};

/// How long a successful image check counts for other tasks starting at
/// the same time (so a hundred tasks of one image pull it once).
const IMAGE_FRESH_FOR: Duration = Duration::from_secs(30);

/// What a batch left for the worker to remember.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    pub task_arn: String,
    /// (container name, reason): the task cannot start.
    pub failure: Option<(String, String)>,
    /// Docker refused this subnet (it overlaps another network).
    pub bad_subnet: Option<String>,
    /// The engine could not be reached; nothing was decided.
    pub unavailable: bool,
}

/// Per image: when it was last made available; the async mutex serialises
/// pulls of one image.
type ImageSlots = Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Instant>>>>>>;

/// Runs batches against a runtime.
#[derive(Clone)]
pub struct Executor {
    runtime: Arc<dyn Runtime>,
    pull_behavior: PullBehavior,
    images: ImageSlots,
}

impl Executor {
    pub fn new(runtime: Arc<dyn Runtime>, pull_behavior: PullBehavior) -> Self {
        Executor {
            runtime,
            pull_behavior,
            images: Arc::default(),
        }
    }

    async fn ensure_image(&self, image: &str) -> Result<(), RuntimeError> {
        let slot = {
            let mut images = self.images.lock().unwrap_or_else(|p| p.into_inner());
            images.entry(image.to_string()).or_default().clone()
        };
        let mut last = slot.lock().await;
        if last.is_some_and(|t| t.elapsed() < IMAGE_FRESH_FOR) {
            return Ok(());
        }
        self.runtime
            .ensure_image(image, self.pull_behavior, None)
            .await?;
        *last = Some(Instant::now());
        Ok(())
    }

    /// Runs `actions` of one task in order.
    pub async fn run_batch(&self, task_arn: &str, actions: &[Action]) -> Outcome {
        let mut outcome = Outcome {
            task_arn: task_arn.to_string(),
            ..Default::default()
        };
        let rt = &self.runtime;
        for action in actions {
            let result: Result<(), (Option<String>, RuntimeError)> = match action {
                Action::EnsureImage {
                    container_name,
                    image,
                } => {
                    tracing::info!(task = task_arn, container = %container_name, image = %image, "making the image available");
                    self.ensure_image(image)
                        .await
                        .map_err(|e| (Some(container_name.clone()), e))
                }
                Action::CreateNetwork {
                    name,
                    subnet,
                    labels,
                } => {
                    tracing::info!(task = task_arn, network = %name, subnet = %subnet.cidr, "creating the task network");
                    match rt
                        .create_network(name, Some(&subnet.cidr), Some(&subnet.gateway), labels)
                        .await
                    {
                        Ok(_) => Ok(()),
                        Err(e) if e.is_unavailable() => Err((None, e)),
                        Err(e) => {
                            tracing::warn!(task = task_arn, network = %name, subnet = %subnet.cidr, error = %e, "the engine refused the subnet; another one will be tried");
                            outcome.bad_subnet = Some(subnet.cidr.clone());
                            return outcome;
                        }
                    }
                }
                Action::CreateContainer {
                    container_name,
                    spec,
                } => {
                    tracing::info!(task = task_arn, container = %container_name, name = %spec.name, ports = ?spec.port_bindings, "creating the container");
                    rt.create_container(spec)
                        .await
                        .map(|_| ())
                        .map_err(|e| (Some(container_name.clone()), e))
                }
                Action::StartContainer { container_name, id } => {
                    tracing::info!(task = task_arn, container = %container_name, "starting the container");
                    rt.start_container(id)
                        .await
                        .map_err(|e| (Some(container_name.clone()), start_error(e)))
                }
                Action::StopContainer {
                    container_name,
                    id,
                    timeout,
                } => {
                    tracing::info!(task = task_arn, container = %container_name, timeout_s = timeout.as_secs(), "stopping the container");
                    rt.stop_container(id, *timeout).await.map_err(|e| (None, e))
                }
                Action::RemoveContainer { id } => {
                    tracing::info!(task = task_arn, id = %short(id), "removing the container");
                    rt.remove_container(id).await.map_err(|e| (None, e))
                }
                Action::RemoveNetwork { name } => {
                    tracing::info!(task = task_arn, network = %name, "removing the task network");
                    rt.remove_network(name).await.map_err(|e| (None, e))
                }
            };
            match result {
                Ok(()) => {}
                Err((_, e)) if e.is_unavailable() => {
                    tracing::warn!(task = task_arn, error = %e, "the container engine is unreachable; will retry");
                    outcome.unavailable = true;
                    return outcome;
                }
                Err((Some(container), e)) => {
                    tracing::warn!(task = task_arn, container = %container, error = %e, "the task cannot start");
                    outcome.failure = Some((container, e.to_string()));
                    return outcome;
                }
                Err((None, e)) if e.is_not_found() => {}
                Err((None, e)) => {
                    // Stops and removals are retried on the next pass.
                    tracing::warn!(task = task_arn, error = %e, "cleanup step failed; will retry");
                }
            }
        }
        outcome
    }
}

/// Start errors in ECS words even when the engine answered with something plain.
fn start_error(e: RuntimeError) -> RuntimeError {
    match e {
        RuntimeError::Other(m) | RuntimeError::NotFound(m) => RuntimeError::StartContainer(m),
        e => e,
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::fake::FakeRuntime;
    use crate::agent::network::SubnetPool;
    use crate::agent::runtime::{ContainerSpec, ContainerState};
    use std::collections::BTreeMap;

    fn fake() -> (Arc<FakeRuntime>, Executor) {
        let rt = Arc::new(FakeRuntime::new());
        let ex = Executor::new(rt.clone(), PullBehavior::Default);
        (rt, ex)
    }

    #[tokio::test]
    async fn runs_actions_in_order() {
        let (rt, ex) = fake();
        let subnet = SubnetPool::default().block(0).unwrap();
        let actions = vec![
            Action::EnsureImage {
                container_name: "web".into(),
                image: "app:1".into(),
            },
            Action::CreateNetwork {
                name: "orc-t1".into(),
                subnet,
                labels: BTreeMap::new(),
            },
            Action::CreateContainer {
                container_name: "web".into(),
                spec: Box::new(ContainerSpec::new("orc-t1-web", "app:1")),
            },
            Action::StartContainer {
                container_name: "web".into(),
                id: "orc-t1-web".into(),
            },
        ];
        let out = ex.run_batch("t1", &actions).await;
        assert_eq!(out.failure, None);
        assert_eq!(
            rt.inspect_container("orc-t1-web").await.unwrap().state,
            ContainerState::Running
        );
        assert_eq!(rt.list_networks(None).await.unwrap().len(), 1);
        let out = ex
            .run_batch(
                "t1",
                &[
                    Action::StopContainer {
                        container_name: "web".into(),
                        id: "orc-t1-web".into(),
                        timeout: Duration::from_secs(1),
                    },
                    Action::RemoveContainer {
                        id: "orc-t1-web".into(),
                    },
                    Action::RemoveContainer { id: "gone".into() },
                    Action::RemoveNetwork {
                        name: "orc-t1".into(),
                    },
                ],
            )
            .await;
        assert_eq!(
            out,
            Outcome {
                task_arn: "t1".into(),
                ..Default::default()
            }
        );
        assert_eq!(rt.container_count(), 0);
    }

    #[tokio::test]
    async fn pull_failure_fails_the_task_and_stops_the_batch() {
        let (rt, ex) = fake();
        rt.fail_pull("nope:1", "registry unreachable");
        let out = ex
            .run_batch(
                "t1",
                &[
                    Action::EnsureImage {
                        container_name: "web".into(),
                        image: "nope:1".into(),
                    },
                    Action::CreateContainer {
                        container_name: "web".into(),
                        spec: Box::new(ContainerSpec::new("orc-t1-web", "nope:1")),
                    },
                ],
            )
            .await;
        let (container, reason) = out.failure.unwrap();
        assert_eq!(container, "web");
        assert!(reason.starts_with("CannotPullContainerError"), "{reason}");
        assert_eq!(rt.container_count(), 0);
    }

    #[tokio::test]
    async fn an_unreachable_engine_decides_nothing() {
        let (rt, ex) = fake();
        rt.set_unavailable(true);
        let out = ex
            .run_batch(
                "t1",
                &[Action::EnsureImage {
                    container_name: "web".into(),
                    image: "app:1".into(),
                }],
            )
            .await;
        assert!(out.unavailable);
        assert_eq!(out.failure, None);
    }

    #[tokio::test]
    async fn one_pull_serves_many_tasks() {
        let (rt, ex) = fake();
        let mut handles = Vec::new();
        for i in 0..20 {
            let ex = ex.clone();
            handles.push(tokio::spawn(async move {
                ex.run_batch(
                    &format!("t{i}"),
                    &[Action::EnsureImage {
                        container_name: "c".into(),
                        image: "app:1".into(),
                    }],
                )
                .await
            }));
        }
        for h in handles {
            assert_eq!(h.await.unwrap().failure, None);
        }
        assert_eq!(rt.pull_count(), 1);
    }
}

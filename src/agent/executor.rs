//! Carries out the reconciler's actions through the [`Runtime`] trait.
//!
//! [`Executor::run_batch`] runs one task's actions in order and stops at the
//! first failure, which it returns as an [`Outcome`] for the worker to
//! remember: a pull, create or start failure makes the task fail to start
//! (with the runtime's ECS-worded error as the reason); an unreachable engine
//! only means "try again later"; a refused subnet is skipped next time.
//! Stops and removals never fail a batch: what they could not do is seen and
//! retried on the next pass.
//!
//! A task's stops run in parallel, wave by wave (see
//! [`Action::StopContainer`]), so a task of ten containers that ignore
//! SIGTERM stops in one stop timeout, not ten.
//!
//! Every engine operation takes a permit from one of two lanes
//! ([`Lanes`]): pulls, network and container creations and starts from the
//! start lane, stops and removals from the stop lane. Each lane bounds how
//! many such operations the engine sees at once, and a start never waits
//! behind stops: hundreds of containers sitting out their stop timeouts
//! hold only stop permits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

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
    /// A dynamic host port something else took between the agent's probe
    /// and Docker's bind (another agent on the host, a program): the
    /// container was removed, and the task is created again on another
    /// port instead of failing.
    pub taken_port: Option<crate::agent::ports::HostPort>,
    /// The engine could not be reached; nothing was decided.
    pub unavailable: bool,
}

/// Per image: when it was last made available; the async mutex serialises
/// pulls of one image.
type ImageSlots = Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Instant>>>>>>;

/// The two budgets of engine operations in flight.
#[derive(Clone)]
pub struct Lanes {
    /// Pulls, network and container creations, starts.
    pub starts: Arc<Semaphore>,
    /// Stops and removals (a stop mostly waits out its timeout).
    pub stops: Arc<Semaphore>,
}

impl Lanes {
    /// Lanes of `starts` and `stops` permits (at least one each).
    pub fn new(starts: usize, stops: usize) -> Self {
        Lanes {
            starts: Arc::new(Semaphore::new(starts.max(1))),
            stops: Arc::new(Semaphore::new(stops.max(1))),
        }
    }
}

/// The short registry name every agent resolves to the cluster's registry.
pub const ORC_LOCAL: &str = "orc.local/";

/// Where the executor gets a task's secrets: the task's ARN in, each
/// secret as (container, variable, value) out. The agent asks the control
/// plane (`AgentApi.GetTaskSecrets`); values are never logged.
pub type SecretSource = Arc<
    dyn Fn(
            String,
        ) -> futures::future::BoxFuture<
            'static,
            Result<Vec<(String, String, String)>, RuntimeError>,
        > + Send
        + Sync,
>;

/// Where the executor gets the credential its engine pulls the cluster
/// registry's images with (`None`: pull without one).
pub type RegistryAuthSource = Arc<
    dyn Fn() -> futures::future::BoxFuture<'static, Option<super::runtime::RegistryAuth>>
        + Send
        + Sync,
>;

/// Runs batches against a runtime.
#[derive(Clone)]
pub struct Executor {
    /// The cluster registry's `host:port` now (the server the agent uses),
    /// which `orc.local/` image names resolve to.
    registry: Option<Arc<dyn Fn() -> String + Send + Sync>>,
    /// Where secrets come from (None: a container that needs one fails).
    secrets: Option<SecretSource>,
    /// The credential for pulls from the cluster registry.
    registry_auth: Option<RegistryAuthSource>,
    runtime: Arc<dyn Runtime>,
    pull_behavior: PullBehavior,
    images: ImageSlots,
    lanes: Lanes,
    /// Dynamic host ports already found taken once: a second conflict on
    /// one of them (a static port inside the dynamic range) fails the task.
    taken_before: Arc<Mutex<std::collections::BTreeSet<crate::agent::ports::HostPort>>>,
}

impl Executor {
    /// An executor with the default lanes (16 starts, 256 stops).
    pub fn new(runtime: Arc<dyn Runtime>, pull_behavior: PullBehavior) -> Self {
        Self::with_lanes(runtime, pull_behavior, Lanes::new(16, 256))
    }

    pub fn with_lanes(
        runtime: Arc<dyn Runtime>,
        pull_behavior: PullBehavior,
        lanes: Lanes,
    ) -> Self {
        Executor {
            registry: None,
            secrets: None,
            registry_auth: None,
            runtime,
            pull_behavior,
            images: Arc::default(),
            lanes,
            taken_before: Arc::default(),
        }
    }

    /// Whether `port` was found taken before (and remembers it now).
    fn retried_port(&self, port: crate::agent::ports::HostPort) -> bool {
        !self
            .taken_before
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(port)
    }

    /// Resolves `orc.local/REPO:TAG` to the registry `registry()` names.
    /// Sets where the cluster registry's pull credential comes from.
    pub fn with_registry_auth(mut self, auth: RegistryAuthSource) -> Self {
        self.registry_auth = Some(auth);
        self
    }

    /// Sets where the task secrets come from.
    pub fn with_secrets(mut self, secrets: SecretSource) -> Self {
        self.secrets = Some(secrets);
        self
    }

    /// Adds the task's secrets named in `spec.secret_variables` to its
    /// environment.
    async fn add_secrets(
        &self,
        task_arn: &str,
        spec: &mut super::runtime::ContainerSpec,
    ) -> Result<(), RuntimeError> {
        if spec.secret_variables.is_empty() {
            return Ok(());
        }
        let source = self.secrets.as_ref().ok_or_else(|| {
            RuntimeError::CreateContainer(
                "the task references secrets but this agent has no way to receive them".into(),
            )
        })?;
        let container = spec
            .labels
            .get(super::reconcile::labels::CONTAINER_NAME)
            .cloned()
            .unwrap_or_default();
        let secrets = source(task_arn.to_string()).await?;
        for variable in spec.secret_variables.clone() {
            let value = secrets
                .iter()
                .find(|(c, name, _)| *c == container && *name == variable)
                .map(|(_, _, value)| value.clone())
                .ok_or_else(|| {
                    RuntimeError::CreateContainer(format!(
                        "the control plane sent no secret for {container}'s variable {variable}"
                    ))
                })?;
            spec.environment.push((variable, value));
        }
        Ok(())
    }

    pub fn with_registry(mut self, registry: Arc<dyn Fn() -> String + Send + Sync>) -> Self {
        self.registry = Some(registry);
        self
    }

    /// An image name with the short form `orc.local/` replaced by the
    /// cluster registry's address.
    fn resolve(&self, image: &str) -> String {
        match (image.strip_prefix(ORC_LOCAL), &self.registry) {
            (Some(rest), Some(registry)) => format!("{}/{rest}", registry()),
            _ => image.to_string(),
        }
    }

    async fn start_permit(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.lanes
            .starts
            .acquire()
            .await
            .expect("the lane is never closed")
    }

    async fn stop_permit(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.lanes
            .stops
            .acquire()
            .await
            .expect("the lane is never closed")
    }

    /// Stops one container under a stop permit.
    async fn stop(
        &self,
        task_arn: &str,
        container_name: &str,
        id: &str,
        timeout: Duration,
    ) -> Result<(), RuntimeError> {
        let _permit = self.stop_permit().await;
        tracing::info!(task = task_arn, container = %container_name, timeout_s = timeout.as_secs(), "stopping the container");
        self.runtime.stop_container(id, timeout).await
    }

    /// Runs a run of stops: each wave's stops at once, the waves in order.
    /// The first error of the run (if any) is returned after every stop
    /// of the run was tried.
    async fn stop_waves(&self, task_arn: &str, stops: &[&Action]) -> Result<(), RuntimeError> {
        let mut waves: Vec<u32> = stops
            .iter()
            .filter_map(|a| match a {
                Action::StopContainer { wave, .. } => Some(*wave),
                _ => None,
            })
            .collect();
        waves.sort_unstable();
        waves.dedup();
        let mut first_error = None;
        for w in waves {
            let results = futures::future::join_all(stops.iter().filter_map(|a| match a {
                Action::StopContainer {
                    container_name,
                    id,
                    timeout,
                    wave,
                } if *wave == w => Some(self.stop(task_arn, container_name, id, *timeout)),
                _ => None,
            }))
            .await;
            for r in results {
                match r {
                    Ok(()) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => {
                        if e.is_unavailable() {
                            return Err(e);
                        }
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn ensure_image(
        &self,
        image: &str,
        auth: Option<&super::runtime::RegistryAuth>,
    ) -> Result<(), RuntimeError> {
        let slot = {
            let mut images = self.images.lock().unwrap_or_else(|p| p.into_inner());
            images.entry(image.to_string()).or_default().clone()
        };
        let mut last = slot.lock().await;
        if last.is_some_and(|t| t.elapsed() < IMAGE_FRESH_FOR) {
            return Ok(());
        }
        let _permit = self.start_permit().await;
        self.runtime
            .ensure_image(image, self.pull_behavior, auth)
            .await?;
        *last = Some(Instant::now());
        Ok(())
    }

    /// Runs `actions` of one task in order.
    #[tracing::instrument(level = "debug", skip_all, fields(task = %task_arn, actions = actions.len()))]
    pub async fn run_batch(&self, task_arn: &str, actions: &[Action]) -> Outcome {
        let mut outcome = Outcome {
            task_arn: task_arn.to_string(),
            ..Default::default()
        };
        let rt = &self.runtime;
        // The host ports of each container this batch created, to tell a
        // dynamic port taken meanwhile from a real start failure.
        let mut bindings: HashMap<&str, Vec<crate::agent::runtime::PortBinding>> = HashMap::new();
        let mut next = 0;
        while next < actions.len() {
            let action = &actions[next];
            next += 1;
            let result: Result<(), (Option<String>, RuntimeError)> = match action {
                Action::EnsureImage {
                    container_name,
                    image,
                } => {
                    tracing::info!(task = task_arn, container = %container_name, image = %image, "making the image available");
                    let auth = match (&self.registry_auth, image.starts_with(ORC_LOCAL)) {
                        (Some(source), true) => source().await,
                        _ => None,
                    };
                    self.ensure_image(&self.resolve(image), auth.as_ref())
                        .await
                        .map_err(|e| (Some(container_name.clone()), e))
                }
                Action::CreateNetwork {
                    name,
                    subnet,
                    labels,
                } => {
                    tracing::info!(task = task_arn, network = %name, subnet = %subnet.cidr, "creating the task network");
                    let _permit = self.start_permit().await;
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
                    bindings.insert(container_name.as_str(), spec.port_bindings.clone());
                    let _permit = self.start_permit().await;
                    let mut spec = spec.clone();
                    spec.image = self.resolve(&spec.image);
                    match self.add_secrets(task_arn, &mut spec).await {
                        Ok(()) => rt
                            .create_container(&spec)
                            .await
                            .map(|_| ())
                            .map_err(|e| (Some(container_name.clone()), e)),
                        Err(e) => Err((Some(container_name.clone()), e)),
                    }
                }
                Action::StartContainer { container_name, id } => {
                    tracing::info!(task = task_arn, container = %container_name, "starting the container");
                    let _permit = self.start_permit().await;
                    match rt.start_container(id).await {
                        Ok(()) => Ok(()),
                        Err(e) => {
                            let taken = bindings.get(container_name.as_str()).and_then(|b| {
                                crate::agent::ports::taken_dynamic_port(&e.to_string(), b)
                            });
                            match taken {
                                Some(port) if !self.retried_port(port) => {
                                    tracing::warn!(task = task_arn, container = %container_name, port = port.0, error = %e, "a dynamic host port was taken after it was chosen; the container is created again on another port");
                                    if let Err(error) = rt.remove_container(id).await {
                                        tracing::warn!(task = task_arn, id = %short(id), %error, "cannot remove the container that lost its port; will retry");
                                    }
                                    outcome.taken_port = Some(port);
                                    return outcome;
                                }
                                _ => Err((Some(container_name.clone()), start_error(e))),
                            }
                        }
                    }
                }
                Action::StopContainer { .. } => {
                    // This stop and the stops right after it run together.
                    let mut run = vec![action];
                    while let Some(a @ Action::StopContainer { .. }) = actions.get(next) {
                        run.push(a);
                        next += 1;
                    }
                    self.stop_waves(task_arn, &run).await.map_err(|e| (None, e))
                }
                Action::RemoveContainer { id } => {
                    tracing::info!(task = task_arn, id = %short(id), "removing the container");
                    let _permit = self.stop_permit().await;
                    rt.remove_container(id).await.map_err(|e| (None, e))
                }
                Action::RemoveNetwork { name } => {
                    tracing::info!(task = task_arn, network = %name, "removing the task network");
                    let _permit = self.stop_permit().await;
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
    use crate::agent::fake::{FakeRuntime, StopEvent};
    use crate::agent::network::SubnetPool;
    use crate::agent::runtime::{ContainerSpec, ContainerState};
    use std::collections::BTreeMap;

    fn fake() -> (Arc<FakeRuntime>, Executor) {
        let rt = Arc::new(FakeRuntime::new());
        let ex = Executor::new(rt.clone(), PullBehavior::Default);
        (rt, ex)
    }

    /// Creates and starts a container of task `task` publishing `host_port`.
    fn publish(task: &str, host_port: u16) -> Vec<Action> {
        let mut spec = ContainerSpec::new(format!("orc-{task}-web"), "app:1");
        spec.port_bindings = vec![crate::agent::runtime::PortBinding {
            container_port: 80,
            host_port,
            protocol: crate::agent::runtime::Protocol::Tcp,
        }];
        vec![
            Action::CreateContainer {
                container_name: "web".into(),
                spec: Box::new(spec),
            },
            Action::StartContainer {
                container_name: "web".into(),
                id: format!("orc-{task}-web"),
            },
        ]
    }

    #[tokio::test]
    async fn a_dynamic_port_taken_after_it_was_chosen_sends_the_task_back_not_to_stopped() {
        let (rt, ex) = fake();
        rt.add_image("app:1");
        // Something else holds 32770 (another agent's container on this host).
        assert_eq!(
            ex.run_batch("other", &publish("other", 32770))
                .await
                .failure,
            None
        );
        let out = ex.run_batch("t1", &publish("t1", 32770)).await;
        assert_eq!(out.failure, None, "the task must not fail");
        assert_eq!(
            out.taken_port,
            Some((32770, crate::agent::runtime::Protocol::Tcp))
        );
        assert!(
            rt.inspect_container("orc-t1-web").await.is_err(),
            "the container that lost its port is removed, to be created again"
        );
        // The same port taken again (a static port inside the range): the
        // task fails as any start failure does.
        let out = ex.run_batch("t1", &publish("t1", 32770)).await;
        let (container, reason) = out.failure.expect("a second conflict fails the task");
        assert_eq!(container, "web");
        assert!(reason.contains("port is already allocated"), "{reason}");
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
                        wave: 0,
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

    /// A task of SIGTERM-ignoring containers: web1..web3 depend on db.
    async fn running_task(rt: &FakeRuntime) {
        rt.add_image("app:1");
        for name in ["db", "web1", "web2", "web3"] {
            let id = rt
                .create_container(&ContainerSpec::new(name, "app:1"))
                .await
                .unwrap();
            rt.start_container(&id).await.unwrap();
        }
        rt.set_ignore_sigterm(true);
    }

    fn stop(name: &str, wave: u32) -> Action {
        Action::StopContainer {
            container_name: name.into(),
            id: name.into(),
            timeout: Duration::from_millis(50),
            wave,
        }
    }

    // The stops wait out their SIGTERM timeouts on tokio's clock: paused, it
    // jumps ahead whenever every task waits, so no real time passes.
    #[tokio::test(start_paused = true)]
    async fn stops_overlap_within_a_wave_and_waves_follow_each_other() {
        use crate::agent::fake::StopEvent::{Began, Ended};
        let (rt, ex) = fake();
        running_task(&rt).await;
        let actions = [
            stop("web1", 0),
            stop("web2", 0),
            stop("web3", 0),
            stop("db", 1),
        ];
        let out = ex.run_batch("t1", &actions).await;
        assert_eq!(out.failure, None);
        let events = rt.stop_events();
        let position = |e: StopEvent| events.iter().position(|x| *x == e).unwrap();
        let webs = ["web1", "web2", "web3"];
        // Every web stop began before any of them ended: they overlapped.
        let last_began = webs.iter().map(|w| position(Began(w.to_string()))).max();
        let first_ended = webs.iter().map(|w| position(Ended(w.to_string()))).min();
        assert!(last_began < first_ended, "{events:?}");
        // db's stop began only after every dependent's stop ended.
        let last_web_ended = webs.iter().map(|w| position(Ended(w.to_string()))).max();
        assert!(
            Some(position(Began("db".into()))) > last_web_ended,
            "{events:?}"
        );
        assert_eq!(rt.running_count(), 0);
    }

    #[tokio::test]
    async fn a_start_is_not_queued_behind_stops() {
        let rt = Arc::new(FakeRuntime::new());
        let ex = Executor::with_lanes(rt.clone(), PullBehavior::Default, Lanes::new(1, 2));
        running_task(&rt).await;
        rt.hold_stops(true);
        // Four stops take both stop permits (two wait for one) and never end
        // while held.
        let stopping = {
            let ex = ex.clone();
            tokio::spawn(async move {
                ex.run_batch(
                    "t1",
                    &[
                        stop("web1", 0),
                        stop("web2", 0),
                        stop("web3", 0),
                        stop("db", 0),
                    ],
                )
                .await
            })
        };
        while rt.stops_in_flight() < 2 {
            tokio::task::yield_now().await;
        }
        let out = ex
            .run_batch(
                "t2",
                &[
                    Action::EnsureImage {
                        container_name: "web".into(),
                        image: "app:1".into(),
                    },
                    Action::CreateContainer {
                        container_name: "web".into(),
                        spec: Box::new(ContainerSpec::new("orc-t2-web", "app:1")),
                    },
                    Action::StartContainer {
                        container_name: "web".into(),
                        id: "orc-t2-web".into(),
                    },
                ],
            )
            .await;
        assert_eq!(out.failure, None);
        assert_eq!(
            rt.inspect_container("orc-t2-web").await.unwrap().state,
            ContainerState::Running
        );
        assert_eq!(rt.stops_in_flight(), 2, "the stop lane bounds the stops");
        rt.hold_stops(false);
        assert_eq!(stopping.await.unwrap().failure, None);
        assert_eq!(rt.running_count(), 1);
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

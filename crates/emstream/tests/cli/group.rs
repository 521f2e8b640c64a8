//! A group of workers and reducers (`emstream worker`, `emstream reducer`)
//! on a private nats-server: exactly once through SIGKILLs of a worker and
//! of the reducer, the same model as one process, and the lockstep check
//! that the number of workers does not change the model.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::brokers::{self, jetstream, runtime};
use crate::util::{assert_ok, emstream, points, wait_output, Proc, SpawnGuarded};

/// Partitions of the test streams.
const PARTITIONS: u32 = 3;

/// Points of partition k: the k-th of PARTITIONS contiguous blocks of
/// `all` (so every partition has the mixture's proportions: `points`
/// takes the cluster from the index modulo 3, and every third point in one
/// partition would make the partitions differ in distribution).
fn partition(all: &[String], k: u32) -> Vec<String> {
    let size = all.len().div_ceil(PARTITIONS as usize);
    all.chunks(size)
        .nth(k as usize)
        .unwrap_or_default()
        .to_vec()
}

/// Creates stream `PTS` on `pts.>` and publishes each partition's points
/// to `pts.p<k>`, `per_msg` points per message.
fn publish_partitions(port: u16, all: &[String], per_msg: usize) {
    runtime().block_on(async {
        let js = jetstream(port).await;
        brokers::create_stream(&js, "PTS", -1).await;
        for k in 0..PARTITIONS {
            let mut acks = Vec::new();
            for chunk in partition(all, k).chunks(per_msg) {
                let body = chunk.join("\n").into_bytes();
                acks.push(
                    js.publish(format!("pts.p{k}"), body.into())
                        .await
                        .expect("publish is sent"),
                );
                if acks.len() >= 256 {
                    for a in acks.drain(..) {
                        a.await.expect("publish is acknowledged");
                    }
                }
            }
            for a in acks {
                a.await.expect("publish is acknowledged");
            }
        }
    });
}

/// A group's command lines on the broker at `port`.
struct Group {
    port: u16,
    dir: PathBuf,
    learner: Vec<String>,
    /// More reducer flags.
    extra: Vec<String>,
}

impl Group {
    fn common(&self, role: &str) -> Vec<String> {
        let a: Vec<String> = vec![
            role.into(),
            "--nats".into(),
            format!("nats://127.0.0.1:{}", self.port),
            "--group".into(),
            "g".into(),
            "--stream".into(),
            "PTS".into(),
            "--subject-prefix".into(),
            "pts".into(),
            "--partitions".into(),
            PARTITIONS.to_string(),
            "--dim".into(),
            "2".into(),
            "--lease-ttl".into(),
            "2".into(),
        ];
        a
    }

    fn spawn(&self, args: Vec<String>, name: &str) -> Proc {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).unwrap();
        emstream()
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn_guarded()
            .expect("the binary starts")
    }

    /// The log of member `name` so far.
    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Waits until the log of member `name` holds `needle` (after its
    /// first `skip` bytes).
    fn wait_log(&self, name: &str, skip: usize, needle: &str, patience: Duration) {
        let deadline = Instant::now() + patience;
        while !self
            .log(name)
            .get(skip..)
            .unwrap_or_default()
            .contains(needle)
        {
            assert!(
                Instant::now() < deadline,
                "{name} never logged {needle:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The partitions worker `id` holds by its log: taken and not given
    /// up or handed over since.
    fn held_by(&self, id: &str) -> std::collections::BTreeSet<u32> {
        let mut held = std::collections::BTreeSet::new();
        for line in self.log(id).lines() {
            let Some(k) = line
                .split(" partition ")
                .nth(1)
                .and_then(|rest| rest.split(' ').next())
                .and_then(|k| k.parse::<u32>().ok())
            else {
                continue;
            };
            if line.contains(&format!("worker {id} took")) {
                held.insert(k);
            } else if line.contains(&format!("worker {id} gave up"))
                || line.contains(&format!("worker {id} handed"))
            {
                held.remove(&k);
            }
        }
        held
    }

    fn reducer(&self, name: &str, stop_after: u64) -> Proc {
        let mut a = self.common("reducer");
        a.extend(self.learner.iter().cloned());
        a.extend(self.extra.iter().cloned());
        a.extend([
            "--stop-after".into(),
            stop_after.to_string(),
            "--checkpoint".into(),
            self.dir.join(format!("{name}.ckpt")).display().to_string(),
        ]);
        self.spawn(a, name)
    }

    fn worker(&self, name: &str) -> Proc {
        let mut a = self.common("worker");
        a.extend(["--id".into(), name.into()]);
        self.spawn(a, name)
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}/g", self.port)
    }

    /// The group model's points, once there is one.
    fn points_seen(&self) -> Option<u64> {
        emstream::group::fetch_checkpoint(&self.url())
            .ok()
            .map(|(c, _)| c.learner.counters().points_seen)
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for e in std::fs::read_dir(&self.dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "log") {
                out.push_str(&format!(
                    "--- {}\n{}\n",
                    p.display(),
                    std::fs::read_to_string(&p).unwrap_or_default()
                ));
            }
        }
        out
    }

    /// Waits until the model holds at least `n` points.
    fn wait_points(&self, n: u64, patience: Duration) {
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            if self.points_seen().is_some_and(|p| p >= n) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "the group model never held {n} points (last {:?})\n{}",
            self.points_seen(),
            self.logs()
        );
    }

    /// Waits for `child` to exit 0.
    fn finish(&self, child: Proc, patience: Duration) {
        let mut child = child;
        let deadline = Instant::now() + patience;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "{status}\n{}", self.logs());
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("a group member did not finish\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn kill(child: &mut Proc) {
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
}

/// Average log-likelihood of `pts` under the model of checkpoint `path`.
fn avg_ll(ck: &emstream::checkpoint::Checkpoint, pts: &[String]) -> f64 {
    let mix = ck.learner.mixture().expect("a model");
    let flat: Vec<f64> = pts
        .iter()
        .flat_map(|l| l.split(',').map(|v| v.parse::<f64>().unwrap()))
        .collect();
    let (mut scratch, mut ll, mut labels) = (Vec::new(), Vec::new(), Vec::new());
    mix.score_batch(&flat, &mut scratch, &mut ll, &mut labels, None);
    ll.iter().sum::<f64>() / ll.len() as f64
}

/// A single-process `emstream run` on `lines`, in that order.
fn single(
    dir: &Path,
    lines: &[String],
    learner: &[String],
    name: &str,
) -> emstream::checkpoint::Checkpoint {
    let input = dir.join(format!("{name}.csv"));
    std::fs::write(&input, crate::util::text(lines)).unwrap();
    let ckpt = dir.join(format!("{name}.ckpt"));
    let out = emstream()
        .arg("run")
        .arg("--input")
        .arg(&input)
        .arg("--checkpoint")
        .arg(&ckpt)
        .args(learner)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn_guarded()
        .map(wait_output)
        .expect("run starts");
    assert_ok(&out);
    emstream::checkpoint::load(&ckpt).expect("the single run's checkpoint")
}

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// The scenario, scaled by `n` points: 3 workers, a reducer and a
/// standby; a worker is SIGKILLed mid-stream and later the reducer.
fn survives_the_loss_of_a_worker_and_of_the_reducer(n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let broker = brokers::nats(dir.path(), "group");
    let all = points(n, 11);
    publish_partitions(broker.port, &all, 100);
    let learner = strings(&[
        "-k",
        "2",
        "--warmup",
        "600",
        "--batch-size",
        "200",
        "--seed",
        "3",
    ]);
    let g = Group {
        port: broker.port,
        dir: dir.path().to_path_buf(),
        learner: learner.clone(),
        extra: Vec::new(),
    };
    let total = n as u64;
    let patience = Duration::from_secs(120);
    let lease = "reducer lease taken";
    let mut reducer = g.reducer("reducer-a", total);
    // The standby starts once the first holds the lease.
    g.wait_log("reducer-a", 0, lease, patience);
    let standby = g.reducer("reducer-b", total);
    let mut w1 = g.worker("w1");
    let w2 = g.worker("w2");
    let w3 = g.worker("w3");
    // Each worker holds its share (one of the three partitions).
    for w in ["w1", "w2", "w3"] {
        g.wait_log(w, 0, &format!("worker {w} took partition"), patience);
    }
    g.wait_points(total / 4, patience);
    let seen = [g.log("w2").len(), g.log("w3").len()];
    kill(&mut w1);
    // The killed worker's partitions are taken over by the others.
    let orphans = g.held_by("w1");
    assert!(!orphans.is_empty(), "w1 held no partition\n{}", g.logs());
    for k in orphans {
        let deadline = Instant::now() + patience;
        while !["w2", "w3"].iter().zip(seen).any(|(w, from)| {
            g.log(w)
                .get(from..)
                .unwrap_or_default()
                .contains(&format!("worker {w} took partition {k}\n"))
        }) {
            assert!(
                Instant::now() < deadline,
                "partition {k} of the killed worker was never taken over\n{}",
                g.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    g.wait_points(total / 2, patience);
    assert!(
        !g.log("reducer-b").contains(lease),
        "the standby took the lease while the reducer held it\n{}",
        g.logs()
    );
    kill(&mut reducer);
    // The standby takes over.
    g.wait_log("reducer-b", 0, lease, patience);
    g.finish(standby, patience);
    g.finish(w2, patience);
    g.finish(w3, patience);

    let (group, value) = emstream::group::fetch_checkpoint(&g.url()).unwrap();
    assert!(value.finished);
    assert_eq!(
        group.learner.counters().points_seen,
        total,
        "every published point learned exactly once\n{}",
        g.logs()
    );
    let file = emstream::checkpoint::load(&dir.path().join("reducer-b.ckpt")).unwrap();
    assert_eq!(file.learner.counters().points_seen, total);
    assert_eq!(file.learner.mixture(), group.learner.mixture());

    let one = single(dir.path(), &all, &learner, "single");
    assert_eq!(one.learner.counters().points_seen, total);
    let held_out = points(20_000, 999);
    let (lg, l1) = (avg_ll(&group, &held_out), avg_ll(&one, &held_out));
    eprintln!("held-out log-likelihood: group {lg}, single process {l1}");
    let b = std::fs::read_to_string(dir.path().join("reducer-b.log")).unwrap_or_default();
    eprintln!("{}", b.lines().last().unwrap_or_default());
    assert!(
        (lg - l1).abs() < 0.002,
        "held-out log-likelihood: group {lg}, single process {l1}\n{}",
        g.logs()
    );
}

/// The size: 400k points.
#[test]
#[cfg_attr(
    emstream_skip_brokers,
    ignore = "EMSTREAM_SKIP_BROKERS=1: needs mosquitto and nats-server"
)]
fn group_learns_400k_points_exactly_once_through_sigkills_of_a_worker_and_the_reducer() {
    survives_the_loss_of_a_worker_and_of_the_reducer(400_000);
}

/// Largest difference between the weights, means and covariances of two
/// checkpoints' models.
fn model_gap(a: &emstream::checkpoint::Checkpoint, b: &emstream::checkpoint::Checkpoint) -> f64 {
    let (a, b) = (a.learner.mixture().unwrap(), b.learner.mixture().unwrap());
    assert_eq!(a.n_components(), b.n_components());
    let mut gap: f64 = 0.0;
    let mut cmp = |x: &[f64], y: &[f64]| {
        for (u, v) in x.iter().zip(y) {
            gap = gap.max((u - v).abs());
        }
    };
    cmp(a.weights(), b.weights());
    cmp(a.means(), b.means());
    for j in 0..a.n_components() {
        cmp(&a.covariance_matrix(j), &b.covariance_matrix(j));
    }
    gap
}

/// Lockstep with step decay 1 (cumulative averaging over the global
/// count): the model of 1 worker and of 3 workers is the model of one
/// process fed the same points in the lockstep order (each partition's
/// warm-up share, then one batch per partition in turn).
#[test]
#[cfg_attr(
    emstream_skip_brokers,
    ignore = "EMSTREAM_SKIP_BROKERS=1: needs mosquitto and nats-server"
)]
fn with_step_decay_1_the_group_model_is_the_single_process_model_for_1_or_3_workers() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = brokers::nats(dir.path(), "group lockstep");
    let (warm, batch, rounds) = (300usize, 100usize, 12usize);
    let share = warm / PARTITIONS as usize;
    let per_part = share + batch * rounds;
    let all = points(per_part * PARTITIONS as usize, 21);
    let parts: Vec<Vec<String>> = (0..PARTITIONS).map(|k| partition(&all, k)).collect();
    // The order one process must see.
    let mut order: Vec<String> = parts.iter().flat_map(|p| p[..share].to_vec()).collect();
    for r in 0..rounds {
        for p in &parts {
            let from = share + r * batch;
            order.extend_from_slice(&p[from..from + batch]);
        }
    }
    let learner = strings(&[
        "-k",
        "2",
        "--warmup",
        "300",
        "--batch-size",
        "100",
        "--step-decay",
        "1",
        "--step-offset",
        "0",
        "--step-floor",
        "0",
        "--seed",
        "5",
    ]);
    let one = single(dir.path(), &order, &learner, "single");
    let total = order.len() as u64;
    let mut models = Vec::new();
    for workers in [1, 3] {
        // A fresh server (and so a fresh group) per run.
        broker.stop();
        let _ = std::fs::remove_dir_all(dir.path().join("jetstream"));
        broker.restart();
        publish_partitions(broker.port, &all, 50);
        let g = Group {
            port: broker.port,
            dir: dir.path().join(format!("w{workers}")),
            learner: learner.clone(),
            extra: strings(&["--lockstep", "--tau", "0"]),
        };
        std::fs::create_dir_all(&g.dir).unwrap();
        let reducer = g.reducer("reducer", total);
        let ws: Vec<Proc> = (0..workers).map(|i| g.worker(&format!("w{i}"))).collect();
        let patience = Duration::from_secs(120);
        g.finish(reducer, patience);
        for w in ws {
            g.finish(w, patience);
        }
        let (model, _) = emstream::group::fetch_checkpoint(&g.url()).unwrap();
        assert_eq!(model.learner.counters().points_seen, total);
        let gap = model_gap(&model, &one);
        eprintln!("{workers} worker(s): gap {gap}");
        assert!(
            gap < 1e-9,
            "{workers} worker(s): the model differs from one process by {gap}\n{}",
            g.logs()
        );
        models.push(model);
    }
    assert_eq!(model_gap(&models[0], &models[1]), 0.0, "1 and 3 workers");
}

/// The NATS server restarts mid-stream (its store kept): the members
/// reconnect and the group finishes with every point learned once.
#[test]
#[cfg_attr(
    emstream_skip_brokers,
    ignore = "EMSTREAM_SKIP_BROKERS=1: needs mosquitto and nats-server"
)]
fn group_finishes_exactly_once_across_a_nats_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = brokers::nats(dir.path(), "group restart");
    let n = 60_000;
    let all = points(n, 5);
    publish_partitions(broker.port, &all, 100);
    let learner = strings(&[
        "-k",
        "2",
        "--warmup",
        "600",
        "--batch-size",
        "200",
        "--seed",
        "3",
    ]);
    let g = Group {
        port: broker.port,
        dir: dir.path().to_path_buf(),
        learner,
        extra: Vec::new(),
    };
    let total = n as u64;
    let reducer = g.reducer("reducer", total);
    let ws: Vec<Proc> = (0..2).map(|i| g.worker(&format!("w{i}"))).collect();
    let patience = Duration::from_secs(120);
    g.wait_points(total / 3, patience);
    broker.stop();
    std::thread::sleep(Duration::from_millis(500));
    broker.restart();
    g.finish(reducer, patience);
    for w in ws {
        g.finish(w, patience);
    }
    let (model, _) = emstream::group::fetch_checkpoint(&g.url()).unwrap();
    assert_eq!(model.learner.counters().points_seen, total, "{}", g.logs());
    // `inspect` reads the group's model from the server.
    let out = emstream()
        .args(["inspect", "--json", &g.url()])
        .output()
        .unwrap();
    assert_ok(&out);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["points_seen"], total);
    let bad = emstream()
        .args(["inspect", &format!("nats://127.0.0.1:{}/nogroup", g.port)])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("no group nogroup"), "{err}");
    let bad = emstream()
        .args(["inspect", "nats://127.0.0.1"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&bad.stderr).contains("nats://HOST:PORT/GROUP"));
}

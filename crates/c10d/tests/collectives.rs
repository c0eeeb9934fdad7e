//! Real processes on 127.0.0.1 through Gloo. Each test re-runs this test binary as the ranks of
//! a small world (`GEAR_DIST_TEST_RANK` marks a child), and the parent checks every child exits
//! cleanly within a deadline — a hung collective fails the test instead of hanging it.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gear_c10d::{
    all_gather_rows, broadcast_tensors, Backend, DistEnv, GradientBuckets, ProcessGroup,
};
use tch::{Kind, Tensor};

const CHILD: &str = "GEAR_DIST_TEST_CHILD";

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Runs `test` as ranks `ranks` of a world of `world` processes.
fn spawn(test: &str, world: usize, ranks: &[usize]) -> Vec<Child> {
    let port = free_port();
    ranks
        .iter()
        .map(|&rank| {
            Command::new(std::env::current_exe().expect("test binary"))
                .args(["--exact", test, "--nocapture", "--test-threads=1"])
                .env(CHILD, "1")
                .env("RANK", rank.to_string())
                .env("WORLD_SIZE", world.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", port.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn rank")
        })
        .collect()
}

/// Waits for every child within `deadline`; returns (exit success, stdout+stderr) per rank.
fn wait_all(children: Vec<Child>, deadline: Duration) -> Vec<(bool, String)> {
    let start = Instant::now();
    let mut children: Vec<Option<Child>> = children.into_iter().map(Some).collect();
    let mut results: Vec<Option<(bool, String)>> = vec![None; children.len()];
    while results.iter().any(Option::is_none) {
        for (i, slot) in children.iter_mut().enumerate() {
            if let Some(child) = slot {
                if child.try_wait().expect("wait").is_some() {
                    let out = slot
                        .take()
                        .expect("child")
                        .wait_with_output()
                        .expect("output");
                    let text = format!(
                        "{}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    );
                    results[i] = Some((out.status.success(), text));
                }
            }
        }
        if start.elapsed() > deadline {
            for child in children.iter_mut().flatten() {
                let _ = child.kill();
            }
            panic!("ranks still running after {deadline:?}: a collective hung");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    results.into_iter().map(|r| r.expect("result")).collect()
}

fn is_child() -> bool {
    std::env::var_os(CHILD).is_some()
}

fn join(timeout: Duration) -> ProcessGroup {
    let env = DistEnv::from_env().expect("env").expect("WORLD_SIZE set");
    ProcessGroup::new(&env, Backend::Gloo, timeout).expect("join")
}

fn values(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.reshape([-1]).to_kind(Kind::Float)).expect("values")
}

#[test]
fn collectives_across_three_processes() {
    if !is_child() {
        for (rank, (ok, out)) in wait_all(
            spawn("collectives_across_three_processes", 3, &[0, 1, 2]),
            Duration::from_secs(120),
        )
        .into_iter()
        .enumerate()
        {
            assert!(ok, "rank {rank} failed:\n{out}");
        }
        return;
    }
    let group = join(Duration::from_secs(60));
    let r = group.rank() as f32;
    assert_eq!(group.world_size(), 3);

    // all_reduce: 0 + 1 + 2 in every slot, both kinds.
    let t = Tensor::from_slice(&[r, 10.0 * r]);
    group.all_reduce_sum(&t).unwrap();
    assert_eq!(values(&t), vec![3.0, 30.0]);
    let i = Tensor::from_slice(&[group.rank() as i64 + 1]);
    group.all_reduce_sum(&i).unwrap();
    assert_eq!(i.int64_value(&[0]), 6);

    // broadcast from rank 1.
    let b = Tensor::from_slice(&[r; 4]);
    group.broadcast(&b, 1).unwrap();
    assert_eq!(values(&b), vec![1.0; 4]);

    // all_gather of equal shapes, in rank order.
    let g = group
        .all_gather(&Tensor::from_slice(&[r, r]).view([1, 2]))
        .unwrap();
    assert_eq!(g.size(), vec![3, 2]);
    assert_eq!(values(&g), vec![0.0, 0.0, 1.0, 1.0, 2.0, 2.0]);

    // all_gather_rows with rank r holding r + 1 rows of value r.
    let rows = Tensor::full(
        [group.rank() as i64 + 1, 2],
        f64::from(r),
        (Kind::Float, tch::Device::Cpu),
    );
    let (all, counts) = all_gather_rows(&group, &rows).unwrap();
    assert_eq!(counts, vec![1, 2, 3]);
    assert_eq!(
        values(&all),
        vec![0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0]
    );

    // Bucketed gradient averaging: grads r·(1, 2, 3) and r·4 → mean 1·(1, 2, 3), 4; with a
    // 12-byte cap the two parameters go in two buckets.
    let p1 = Tensor::zeros([3], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
    let p2 = Tensor::zeros([1], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
    let loss = (&p1 * Tensor::from_slice(&[r, 2.0 * r, 3.0 * r])).sum(Kind::Float)
        + (&p2 * (4.0 * f64::from(r))).sum(Kind::Float);
    loss.backward();
    let params = [p1.shallow_clone(), p2.shallow_clone()];
    let buckets = GradientBuckets::new(&params, 12);
    assert_eq!(buckets.len(), 2);
    assert_eq!(buckets.all_reduce_mean(&group, &params).unwrap(), 2);
    assert_eq!(values(&p1.grad()), vec![1.0, 2.0, 3.0]);
    assert_eq!(values(&p2.grad()), vec![4.0]);
    let one = GradientBuckets::new(&params, GradientBuckets::DEFAULT_BUCKET_BYTES);
    assert_eq!(one.len(), 1);

    // Parameters broadcast from rank 0 (one bucket).
    let w1 = Tensor::full([2, 2], f64::from(r) + 1.0, (Kind::Float, tch::Device::Cpu));
    let w2 = Tensor::full([3], f64::from(r) + 5.0, (Kind::Float, tch::Device::Cpu));
    let n = broadcast_tensors(
        &group,
        &[w1.shallow_clone(), w2.shallow_clone()],
        0,
        1 << 20,
    )
    .unwrap();
    assert_eq!(n, 1);
    assert_eq!(values(&w1), vec![1.0; 4]);
    assert_eq!(values(&w2), vec![5.0; 3]);
    group.barrier().unwrap();
}

#[test]
fn a_dead_peer_is_an_error_not_a_hang() {
    if !is_child() {
        let results = wait_all(
            spawn("a_dead_peer_is_an_error_not_a_hang", 2, &[0, 1]),
            Duration::from_secs(90),
        );
        let (ok0, out0) = &results[0];
        assert!(
            ok0,
            "rank 0 should have seen a clear error and exited cleanly:\n{out0}"
        );
        assert!(out0.contains("rank 0 saw: "), "{out0}");
        eprintln!(
            "{}",
            out0.lines()
                .find(|l| l.contains("rank 0 saw"))
                .unwrap_or_default()
        );
        return;
    }
    let group = join(Duration::from_secs(20));
    let t = Tensor::from_slice(&[1.0f32]);
    group.all_reduce_sum(&t).unwrap();
    if group.rank() == 1 {
        // Dies without a word, as a crashed or OOM-killed trainer would.
        std::process::exit(3);
    }
    let start = Instant::now();
    let mut last = Ok(());
    // The first collective after the death may still be in flight; the peer's socket closes.
    for _ in 0..3 {
        last = group.all_reduce_sum(&t);
        if last.is_err() {
            break;
        }
    }
    let err = last.expect_err("collectives with a dead peer must fail");
    let message = err.to_string();
    assert!(message.contains("all_reduce failed on rank 0"), "{message}");
    assert!(start.elapsed() < Duration::from_secs(60));
    println!("rank 0 saw: {message}");
}

#[test]
fn a_peer_that_never_joins_times_out_with_a_clear_error() {
    if !is_child() {
        // Only rank 0 of a world of two starts.
        let results = wait_all(
            spawn(
                "a_peer_that_never_joins_times_out_with_a_clear_error",
                2,
                &[0],
            ),
            Duration::from_secs(60),
        );
        assert!(results[0].0, "{}", results[0].1);
        eprintln!(
            "{}",
            results[0]
                .1
                .lines()
                .find(|l| l.contains("rank 0 saw"))
                .unwrap_or_default()
        );
        return;
    }
    let env = DistEnv::from_env().unwrap().unwrap();
    let start = Instant::now();
    let err = ProcessGroup::new(&env, Backend::Gloo, Duration::from_secs(3))
        .expect_err("a world of two with one process cannot form");
    let message = err.to_string();
    assert!(
        message.contains("joining the process group (rank 0 of 2, gloo via 127.0.0.1:"),
        "{message}"
    );
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "gave up before the timeout"
    );
    println!("rank 0 saw after {:?}: {message}", start.elapsed());
}

#[test]
fn nccl_needs_a_build_with_nccl() {
    if is_child() || gear_c10d::nccl_available() {
        return;
    }
    let env = DistEnv {
        rank: 0,
        world_size: 1,
        local_rank: 0,
        master_addr: "127.0.0.1".into(),
        master_port: free_port(),
    };
    let err = ProcessGroup::new(&env, Backend::Nccl, Duration::from_secs(5)).unwrap_err();
    assert!(err.to_string().contains("no NCCL backend"), "{err}");
}

use super::*;

#[test]
fn shards_cover_the_batch_once_with_weights_summing_to_one() {
    for n in [1, 2, 3, 7, 64, 65] {
        for world in [1, 2, 3, 4] {
            let shards: Vec<_> = (0..world).map(|r| shard(n, r, world)).collect();
            let weight: f64 = shards.iter().map(|s| s.2).sum();
            assert!((weight - 1.0).abs() < 1e-12, "n {n} world {world}");
            if n >= world as i64 {
                let mut next = 0;
                for (start, len, _) in shards {
                    assert_eq!(start, next);
                    assert!(len > 0);
                    next = start + len;
                }
                assert_eq!(next, n);
            }
        }
    }
}

#[test]
fn gloo_source_locations_are_dropped_from_messages() {
    assert_eq!(
        without_source_location(
            "[/w/gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:1"
        ),
        "Connection closed by peer [127.0.0.1]:1"
    );
    assert_eq!(without_source_location("[a b] c"), "[a b] c");
    assert_eq!(without_source_location("plain"), "plain");
}

#[test]
fn a_rank_trains_on_the_cpu_or_the_gpu_of_its_local_rank() {
    let rv = Rendezvous {
        rank: 5,
        world: 8,
        local_rank: 1,
        master_addr: "10.0.0.1".into(),
        master_port: 29500,
        agent_store: true,
        timeout: Duration::from_secs(1),
    };
    assert_eq!(rank_device(&rv, Device::Cpu).unwrap(), Device::Cpu);
    let devices = tch::Cuda::device_count();
    match rank_device(&rv, Device::Cuda(0)) {
        Ok(device) => {
            assert!(NCCL && devices > 1);
            assert_eq!(device, Device::Cuda(1));
        }
        Err(DistError::NoNccl { why }) => {
            assert!(!NCCL);
            assert_eq!(why, no_nccl_why());
        }
        Err(DistError::NoDevice {
            local_rank,
            devices: seen,
            ..
        }) => {
            assert!(NCCL);
            assert_eq!((local_rank, seen as i64), (1, devices));
        }
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn torchrun_environment_is_read_and_checked() {
    let vars = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    };
    assert_eq!(Rendezvous::from_vars(vars(&[])).unwrap(), None);
    assert_eq!(
        Rendezvous::from_vars(vars(&[("WORLD_SIZE", "1")])).unwrap(),
        None
    );
    let rv = Rendezvous::from_vars(vars(&[
        ("WORLD_SIZE", "4"),
        ("RANK", "3"),
        ("LOCAL_RANK", "1"),
        ("MASTER_ADDR", "10.0.0.1"),
        ("MASTER_PORT", "29500"),
        ("TORCHELASTIC_USE_AGENT_STORE", "True"),
    ]))
    .unwrap()
    .unwrap();
    assert_eq!((rv.rank, rv.world, rv.local_rank), (3, 4, 1));
    assert!(rv.agent_store);
    assert_eq!(rv.timeout, Duration::from_secs(DEFAULT_TIMEOUT_S));
    let missing = Rendezvous::from_vars(vars(&[("WORLD_SIZE", "2"), ("RANK", "0")]))
        .unwrap_err()
        .to_string();
    assert!(missing.contains("MASTER_ADDR"), "{missing}");
    let bad = Rendezvous::from_vars(vars(&[
        ("WORLD_SIZE", "2"),
        ("RANK", "2"),
        ("MASTER_ADDR", "x"),
        ("MASTER_PORT", "1"),
    ]))
    .unwrap_err()
    .to_string();
    assert!(bad.contains("RANK=2"), "{bad}");
}

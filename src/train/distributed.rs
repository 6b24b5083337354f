//! Data-parallel training on PyTorch's distributed engine (c10d): a TCPStore rendezvous,
//! then Gloo collectives on the CPU or NCCL collectives on CUDA devices, reached through
//! the C++ bridge in shim/dist.cpp. Ranks find each other as torchrun's workers do (RANK,
//! WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, ...).
//!
//! Every collective is issued in one fixed order on every rank (a mismatch aborts Gloo);
//! a failed one poisons the group, so later calls fail at once with the first error.
//!
//! The NCCL path (`--device cuda`) is compiled when libtorch has CUDA (see build.rs) but
//! has never run on this project's machines, which have no GPU; Gloo is the tested one.

use std::sync::Mutex;
use std::time::Duration;

use tch::{Device, Kind, Tensor};

/// Why distributed training could not start or continue.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DistError {
    #[error("distributed training is not available in this build of qatc (built without its bridge to PyTorch's c10d: libtorch's distributed headers were missing, or QATC_NO_DIST was set)\n  hint: rebuild against the libtorch scripts/setup-libtorch.sh assembles, or train in one process")]
    Unavailable,
    #[error("torchrun environment: {0}")]
    Environment(String),
    #[error("rank {rank}: cannot join the {world} ranks at {addr}:{port} within {timeout_s} s: {why}\n  hint: start every rank (another rank may have failed or not started), and check MASTER_ADDR/MASTER_PORT")]
    Rendezvous {
        rank: usize,
        world: usize,
        addr: String,
        port: u16,
        timeout_s: u64,
        why: String,
    },
    #[error("rank {rank}: {what} failed: {why}\n  another rank has stopped or is unreachable (its own message says why); stopping")]
    Collective {
        rank: usize,
        what: &'static str,
        why: String,
    },
    #[error("rank {rank} builds a different model or recipe than rank 0 (fingerprint {theirs} vs {ours})\n  hint: give every rank the same .qat file, recipe and options")]
    ConfigMismatch {
        rank: usize,
        ours: String,
        theirs: String,
    },
    #[error("rank {rank}: the ranks would resume the {stage} stage from different epochs (this one after {epochs_done})\n  hint: --resume needs {} on every rank (one machine or a shared filesystem)", checkpoints.display())]
    ResumeMismatch {
        rank: usize,
        stage: &'static str,
        epochs_done: usize,
        checkpoints: std::path::PathBuf,
    },
    #[error("cannot host the rendezvous store: {0}")]
    Store(String),
    #[error("data-parallel training on CUDA devices needs NCCL, and this qatc was built without it: {why}\n  hint: build qatc against a CUDA libtorch (LIBTORCH=$(scripts/setup-libtorch.sh --cuda) cargo build --release), or train on the CPU (--device cpu)")]
    NoNccl { why: &'static str },
    #[error("rank {rank}: LOCAL_RANK={local_rank} has no CUDA device of its own (this machine has {devices})\n  hint: start at most one rank per GPU on each machine (--nproc, or torchrun's --nproc-per-node)")]
    NoDevice {
        rank: usize,
        local_rank: usize,
        devices: usize,
    },
}

/// Where and how this process joins a group: torchrun's environment variables.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendezvous {
    pub rank: usize,
    pub world: usize,
    pub local_rank: usize,
    pub master_addr: String,
    pub master_port: u16,
    /// TORCHELASTIC_USE_AGENT_STORE: the launcher hosts the store and every rank is a
    /// client; otherwise rank 0 hosts it.
    pub agent_store: bool,
    /// How long a rendezvous or a collective may wait for the other ranks.
    pub timeout: Duration,
}

/// Seconds a rendezvous or collective waits before failing (QATC_DIST_TIMEOUT overrides).
pub const DEFAULT_TIMEOUT_S: u64 = 300;

impl Rendezvous {
    /// The group described by torchrun's variables, or `None` without `WORLD_SIZE`
    /// (or with `WORLD_SIZE=1`): then qatc trains in one process.
    pub fn from_env() -> Result<Option<Rendezvous>, DistError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`Rendezvous::from_env`] over any source of variables.
    pub fn from_vars(
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Rendezvous>, DistError> {
        let Some(world) = var("WORLD_SIZE") else {
            return Ok(None);
        };
        let number = |name: &str, value: &str| {
            value.trim().parse::<usize>().map_err(|_| {
                DistError::Environment(format!("{name}={value:?} is not a whole number"))
            })
        };
        let world = number("WORLD_SIZE", &world)?;
        if world <= 1 {
            return Ok(None);
        }
        let required = |name: &str| {
            var(name).ok_or_else(|| {
                DistError::Environment(format!(
                    "WORLD_SIZE={world} but {name} is not set (torchrun sets RANK, MASTER_ADDR and MASTER_PORT)"
                ))
            })
        };
        let rank = number("RANK", &required("RANK")?)?;
        if rank >= world {
            return Err(DistError::Environment(format!(
                "RANK={rank} is not below WORLD_SIZE={world}"
            )));
        }
        let local_rank = match var("LOCAL_RANK") {
            Some(v) => number("LOCAL_RANK", &v)?,
            None => rank,
        };
        let master_addr = required("MASTER_ADDR")?;
        let port = required("MASTER_PORT")?;
        let master_port = port.trim().parse::<u16>().map_err(|_| {
            DistError::Environment(format!("MASTER_PORT={port:?} is not a port number"))
        })?;
        let agent_store = var("TORCHELASTIC_USE_AGENT_STORE")
            .is_some_and(|v| matches!(v.trim(), "True" | "true" | "1"));
        let timeout_s = match var("QATC_DIST_TIMEOUT") {
            Some(v) => v
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|&s| s > 0)
                .ok_or_else(|| {
                    DistError::Environment(format!(
                        "QATC_DIST_TIMEOUT={v:?} is not a positive number of seconds"
                    ))
                })?,
            None => DEFAULT_TIMEOUT_S,
        };
        Ok(Some(Rendezvous {
            rank,
            world,
            local_rank,
            master_addr,
            master_port,
            agent_store,
            timeout: Duration::from_secs(timeout_s),
        }))
    }
}

/// Whether this qatc was built with the bridge to c10d.
pub const AVAILABLE: bool = cfg!(qatc_dist);

/// Whether the bridge has NCCL (collectives between CUDA devices).
pub const NCCL: bool = cfg!(qatc_nccl);

/// Why this build has no NCCL, as build.rs found it.
pub fn no_nccl_why() -> &'static str {
    match option_env!("QATC_NO_NCCL_WHY") {
        Some(why) => why,
        None if !AVAILABLE => "it was built without its bridge to c10d altogether",
        None => "unknown",
    }
}

/// The device a rank trains on when `requested` is asked for: the CPU (Gloo), or the
/// CUDA device numbered by its LOCAL_RANK (NCCL), as torchrun's convention has it.
pub fn rank_device(rv: &Rendezvous, requested: Device) -> Result<Device, DistError> {
    match requested {
        Device::Cpu => Ok(Device::Cpu),
        Device::Cuda(_) | Device::Mps | Device::Vulkan => {
            if !NCCL {
                return Err(DistError::NoNccl { why: no_nccl_why() });
            }
            let devices = tch::Cuda::device_count().max(0) as usize;
            if rv.local_rank >= devices {
                return Err(DistError::NoDevice {
                    rank: rv.rank,
                    local_rank: rv.local_rank,
                    devices,
                });
            }
            Ok(Device::Cuda(rv.local_rank))
        }
    }
}

#[cfg(qatc_dist)]
mod ffi;

/// The reductions c10d runs for us.
#[derive(Debug, Clone, Copy)]
enum Reduce {
    Sum = 0,
    Max = 2,
}

/// Elements per allreduce call: gradients go in buckets of this size (16 MiB of f32).
const BUCKET: i64 = 4 << 20;

/// One rank's membership of a group of processes training together.
pub struct Group {
    #[cfg(qatc_dist)]
    raw: Mutex<*mut ffi::Group>,
    rank: usize,
    world: usize,
    /// Where the collectives' tensors live: the CPU (Gloo) or this rank's GPU (NCCL).
    device: Device,
    /// The first failure; every later call returns it.
    failed: Mutex<Option<DistError>>,
    /// Numbers the store keys of successive configuration checks.
    checks: Mutex<u32>,
    /// Seconds spent in collectives, for the benchmark.
    collective_seconds: Mutex<f64>,
}

// SAFETY: the raw group is only used behind its mutex, and c10d's process group may be
// used from any thread.
#[cfg(qatc_dist)]
unsafe impl Send for Group {}
#[cfg(qatc_dist)]
unsafe impl Sync for Group {}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Group(rank {} of {} on {:?})",
            self.rank, self.world, self.device
        )
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        #[cfg(qatc_dist)]
        if let Ok(raw) = self.raw.lock() {
            // After a failure NCCL's communicators are aborted, not shut down (that
            // would wait for the dead peer).
            let clean = self.failed.lock().is_ok_and(|f| f.is_none());
            // SAFETY: created by qatc_dist_connect and freed once, here.
            unsafe { ffi::qatc_dist_free_group(*raw, clean as i32) };
        }
    }
}

impl Group {
    /// Joins the group `rv` describes: rendezvous through the TCPStore, then Gloo on the
    /// CPU or, when `device` is a CUDA device (see [`rank_device`]), NCCL on it.
    pub fn connect(rv: &Rendezvous, device: Device) -> Result<Group, DistError> {
        #[cfg(not(qatc_dist))]
        {
            let _ = (rv, device);
            Err(DistError::Unavailable)
        }
        #[cfg(qatc_dist)]
        {
            use std::ffi::CString;
            let fail = |why: String| DistError::Rendezvous {
                rank: rv.rank,
                world: rv.world,
                addr: rv.master_addr.clone(),
                port: rv.master_port,
                timeout_s: rv.timeout.as_secs(),
                why,
            };
            let host = CString::new(rv.master_addr.as_str())
                .map_err(|_| fail("MASTER_ADDR contains a NUL byte".into()))?;
            // Gloo listens on this machine's address for the master's network: loopback
            // when the master is local, GLOO_SOCKET_IFNAME when set (as in PyTorch).
            let (kind, arg) = match std::env::var("GLOO_SOCKET_IFNAME") {
                Ok(interface) => (2, interface),
                Err(_) if is_loopback(&rv.master_addr) => (1, "127.0.0.1".to_string()),
                Err(_) => (0, String::new()),
            };
            let arg = CString::new(arg)
                .map_err(|_| fail("GLOO_SOCKET_IFNAME contains a NUL byte".into()))?;
            let cuda_device = match device {
                Device::Cpu => -1,
                Device::Cuda(index) if NCCL => index as i32,
                Device::Cuda(_) | Device::Mps | Device::Vulkan => {
                    return Err(DistError::NoNccl { why: no_nccl_why() })
                }
            };
            let mut raw = std::ptr::null_mut();
            // SAFETY: valid C strings and an out pointer; the shim catches every exception.
            let rc = unsafe {
                ffi::qatc_dist_connect(
                    host.as_ptr(),
                    rv.master_port as i32,
                    rv.rank as i32,
                    rv.world as i32,
                    (!rv.agent_store && rv.rank == 0) as i32,
                    rv.timeout.as_millis() as i64,
                    kind,
                    arg.as_ptr(),
                    cuda_device,
                    &mut raw,
                )
            };
            if rc != 0 {
                return Err(fail(ffi::last_error()));
            }
            Ok(Group {
                raw: Mutex::new(raw),
                rank: rv.rank,
                world: rv.world,
                device,
                failed: Mutex::new(None),
                checks: Mutex::new(0),
                collective_seconds: Mutex::new(0.0),
            })
        }
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world(&self) -> usize {
        self.world
    }

    /// Where tensors given to collectives must be.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Seconds spent waiting in collectives so far.
    pub fn collective_seconds(&self) -> f64 {
        *self.collective_seconds.lock().expect("not poisoned")
    }

    /// The first failure, if a collective has failed.
    pub fn failure(&self) -> Option<DistError> {
        self.failed.lock().expect("not poisoned").clone()
    }

    /// Runs one call of the shim, or returns the group's earlier failure.
    #[cfg(qatc_dist)]
    fn call(
        &self,
        what: &'static str,
        body: impl FnOnce(*mut ffi::Group) -> i32,
    ) -> Result<(), DistError> {
        let mut failed = self.failed.lock().expect("not poisoned");
        if let Some(e) = &*failed {
            return Err(e.clone());
        }
        let raw = self.raw.lock().expect("not poisoned");
        let started = std::time::Instant::now();
        let rc = body(*raw);
        *self.collective_seconds.lock().expect("not poisoned") += started.elapsed().as_secs_f64();
        if rc == 0 {
            return Ok(());
        }
        let e = DistError::Collective {
            rank: self.rank,
            what,
            why: ffi::last_error(),
        };
        *failed = Some(e.clone());
        Err(e)
    }

    /// Checks at rendezvous that every rank builds the same thing: each rank puts its
    /// fingerprint in the store and compares with every other rank's.
    pub fn check_same_config(&self, fingerprint: &str) -> Result<(), DistError> {
        let check = {
            let mut n = self.checks.lock().expect("not poisoned");
            *n += 1;
            *n
        };
        let key = |rank: usize| format!("qatc/config/{check}/{rank}");
        self.store_set(&key(self.rank), fingerprint.as_bytes())?;
        // Rank 0 names every rank that differs; the others compare with rank 0.
        let others: Vec<usize> = if self.rank == 0 {
            (1..self.world).collect()
        } else {
            vec![0]
        };
        for other in others {
            let theirs = String::from_utf8_lossy(&self.store_get(&key(other))?).to_string();
            if theirs != fingerprint {
                let (rank, ours, theirs) = if self.rank == 0 {
                    (other, fingerprint.to_string(), theirs)
                } else {
                    (self.rank, theirs, fingerprint.to_string())
                };
                return Err(DistError::ConfigMismatch { rank, ours, theirs });
            }
        }
        Ok(())
    }

    fn store_set(&self, key: &str, value: &[u8]) -> Result<(), DistError> {
        #[cfg(qatc_dist)]
        {
            let key = std::ffi::CString::new(key).expect("qatc's keys have no NUL");
            // SAFETY: valid pointers for the duration of the call.
            self.call("store set", |g| unsafe {
                ffi::qatc_dist_store_set(g, key.as_ptr(), value.as_ptr(), value.len())
            })
        }
        #[cfg(not(qatc_dist))]
        {
            let _ = (key, value);
            Err(DistError::Unavailable)
        }
    }

    fn store_get(&self, key: &str) -> Result<Vec<u8>, DistError> {
        #[cfg(qatc_dist)]
        {
            let key = std::ffi::CString::new(key).expect("qatc's keys have no NUL");
            let mut buf = vec![0u8; 256];
            let mut len = 0usize;
            // SAFETY: `buf` has `cap` bytes; the shim copies at most that many.
            self.call("waiting for another rank in the store", |g| unsafe {
                ffi::qatc_dist_store_get(g, key.as_ptr(), buf.as_mut_ptr(), buf.len(), &mut len)
            })?;
            buf.truncate(len.min(buf.len()));
            Ok(buf)
        }
        #[cfg(not(qatc_dist))]
        {
            let _ = key;
            Err(DistError::Unavailable)
        }
    }

    fn reduce_one(&self, what: &'static str, t: &Tensor, op: Reduce) -> Result<(), DistError> {
        #[cfg(qatc_dist)]
        {
            let mut ptr = t.as_ptr() as *mut torch_sys::C_tensor;
            // SAFETY: a live tensor on the group's device, reduced in place.
            self.call(what, |g| unsafe {
                ffi::qatc_dist_allreduce(g, &mut ptr, 1, op as i32)
            })
        }
        #[cfg(not(qatc_dist))]
        {
            let _ = (what, t, op);
            Err(DistError::Unavailable)
        }
    }

    /// Sums a flat f32 tensor (on [`Group::device`]) over the ranks, in place, in buckets
    /// of [`BUCKET`] elements.
    pub fn sum_in_place(&self, flat: &Tensor) -> Result<(), DistError> {
        let n = flat.numel() as i64;
        let mut start = 0;
        while start < n {
            let len = BUCKET.min(n - start);
            self.reduce_one(
                "allreduce of gradients",
                &flat.narrow(0, start, len),
                Reduce::Sum,
            )?;
            start += len;
        }
        Ok(())
    }

    /// The smallest `lo` and largest `hi` over the ranks (non-finite values are ignored).
    pub fn min_max(&self, lo: f32, hi: f32) -> Result<(f32, f32), DistError> {
        let (lo, hi) = if lo.is_finite() && hi.is_finite() {
            (lo, hi)
        } else {
            (f32::INFINITY, f32::NEG_INFINITY)
        };
        let t = Tensor::from_slice(&[-lo, hi]).to_device(self.device);
        self.reduce_one("allreduce of an observer's range", &t, Reduce::Max)?;
        let v = Vec::<f32>::try_from(&t.to_device(Device::Cpu)).unwrap_or_default();
        Ok((-v[0], v[1]))
    }

    /// The largest value of `x` over the ranks (used to agree on counts and flags).
    pub fn max_i64(&self, x: i64) -> Result<i64, DistError> {
        let t = Tensor::from_slice(&[x as f64]).to_device(self.device);
        self.reduce_one("allreduce of a count", &t, Reduce::Max)?;
        Ok(t.double_value(&[0]) as i64)
    }

    /// Copies rank 0's values of `tensors` (on [`Group::device`]) into every rank's, in place.
    pub fn broadcast_from_0(&self, tensors: &[Tensor]) -> Result<(), DistError> {
        #[cfg(qatc_dist)]
        {
            let mut ptrs: Vec<*mut torch_sys::C_tensor> =
                tensors.iter().map(|t| t.as_ptr() as *mut _).collect();
            // SAFETY: live tensors, written in place.
            self.call("broadcast of parameters", |g| unsafe {
                ffi::qatc_dist_broadcast(g, ptrs.as_mut_ptr(), ptrs.len() as i32, 0)
            })
        }
        #[cfg(not(qatc_dist))]
        {
            let _ = tensors;
            Err(DistError::Unavailable)
        }
    }

    /// Waits until every rank gets here.
    pub fn barrier(&self) -> Result<(), DistError> {
        #[cfg(qatc_dist)]
        {
            // SAFETY: the group is live.
            self.call("barrier", |g| unsafe { ffi::qatc_dist_barrier(g) })
        }
        #[cfg(not(qatc_dist))]
        Err(DistError::Unavailable)
    }
}

/// Gloo's messages start with the C++ file that raised them (`[/path/pair.cc:553] `),
/// which says nothing to a user.
#[cfg_attr(not(qatc_dist), allow(dead_code))]
fn without_source_location(message: &str) -> &str {
    match message.strip_prefix('[').and_then(|m| m.split_once("] ")) {
        Some((place, rest)) if place.contains(':') && !place.contains(' ') => rest,
        _ => message,
    }
}

#[cfg_attr(not(qatc_dist), allow(dead_code))]
fn is_loopback(addr: &str) -> bool {
    addr == "localhost"
        || addr
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The TCPStore a launcher hosts for its workers (torchrun's agent store).
pub struct StoreHost {
    #[cfg(qatc_dist)]
    raw: *mut ffi::Store,
    pub port: u16,
}

impl StoreHost {
    /// Listens on `port` (0: any free port) on every interface.
    pub fn start(port: u16, world: usize, timeout: Duration) -> Result<StoreHost, DistError> {
        #[cfg(qatc_dist)]
        {
            let mut raw = std::ptr::null_mut();
            let mut bound = 0;
            // SAFETY: out pointers valid for the call; the shim catches every exception.
            let rc = unsafe {
                ffi::qatc_dist_host_store(
                    port as i32,
                    world as i32,
                    timeout.as_millis() as i64,
                    &mut raw,
                    &mut bound,
                )
            };
            if rc != 0 {
                return Err(DistError::Store(ffi::last_error()));
            }
            Ok(StoreHost {
                raw,
                port: bound as u16,
            })
        }
        #[cfg(not(qatc_dist))]
        {
            let _ = (port, world, timeout);
            Err(DistError::Unavailable)
        }
    }
}

impl Drop for StoreHost {
    fn drop(&mut self) {
        // SAFETY: created by qatc_dist_host_store and freed once, here.
        #[cfg(qatc_dist)]
        unsafe {
            ffi::qatc_dist_free_store(self.raw)
        };
    }
}

/// Which part of a global batch of `n` images this rank trains on, and its weight in
/// the average: an even split, or, when there are fewer images than ranks, all of them
/// on every rank with weight 1/world (so that the sum over ranks is the batch mean).
pub fn shard(n: i64, rank: usize, world: usize) -> (i64, i64, f64) {
    let (r, w) = (rank as i64, world as i64);
    if n < w {
        return (0, n, 1.0 / w as f64);
    }
    let start = r * n / w;
    let end = (r + 1) * n / w;
    (start, end - start, (end - start) as f64 / n as f64)
}

/// Averages the gradients of `params` over the ranks in one flat buffer, each rank's
/// weighted by `weight` (its share of the global batch); `extra` (values summed over the
/// ranks, e.g. the weighted loss) and the running statistics `stats` (averaged) travel in
/// the same buffer. Returns the summed `extra`.
pub fn average_step(
    group: &Group,
    params: &[Tensor],
    weight: f64,
    stats: &[Tensor],
    extra: &[f64],
) -> Result<Vec<f64>, DistError> {
    let grads: Vec<Tensor> = params
        .iter()
        .map(|p| {
            let g = p.grad();
            // A parameter this step did not reach has no gradient on any rank.
            if g.defined() {
                (g.to_kind(Kind::Float) * weight).flatten(0, -1)
            } else {
                Tensor::zeros([p.numel() as i64], (Kind::Float, p.device()))
            }
        })
        .collect();
    let mut parts = grads;
    parts.extend(
        stats
            .iter()
            .map(|s| s.detach().to_kind(Kind::Float).flatten(0, -1)),
    );
    let extras: Vec<f32> = extra.iter().map(|&x| x as f32).collect();
    parts.push(
        Tensor::from_slice(&extras).to_device(params.first().map_or(Device::Cpu, Tensor::device)),
    );
    // Stays on the GPU with NCCL.
    let flat = Tensor::cat(&parts, 0)
        .to_device(group.device())
        .contiguous();
    group.sum_in_place(&flat)?;
    let mut at = 0i64;
    tch::no_grad(|| {
        for p in params {
            let n = p.numel() as i64;
            let g = p.grad();
            if g.defined() {
                let summed = flat.narrow(0, at, n).view_(p.size()).to_kind(g.kind());
                let mut g = g;
                g.copy_(&summed);
            }
            at += n;
        }
        for s in stats {
            let n = s.numel() as i64;
            let mean = flat.narrow(0, at, n).view_(s.size()) / group.world() as f64;
            let mut s = s.shallow_clone();
            s.copy_(&mean.to_kind(s.kind()));
            at += n;
        }
    });
    Ok(Vec::<f32>::try_from(
        &flat
            .narrow(0, at, extra.len() as i64)
            .to_device(Device::Cpu),
    )
    .unwrap_or_default()
    .into_iter()
    .map(f64::from)
    .collect())
}

/// Copies rank 0's values of every variable of `vs` (by name, so the same order on every
/// rank) to the other ranks.
pub fn broadcast_variables(group: &Group, vs: &tch::nn::VarStore) -> Result<(), DistError> {
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let copies: Vec<Tensor> = named
        .iter()
        .map(|(_, t)| t.detach().to_device(group.device()).contiguous())
        .collect();
    group.broadcast_from_0(&copies)?;
    tch::no_grad(|| {
        for ((_, t), value) in named.iter().zip(&copies) {
            let mut t = t.shallow_clone();
            t.copy_(value);
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests;

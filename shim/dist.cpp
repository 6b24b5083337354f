// qatc's bridge to PyTorch's distributed engine (c10d): a TCPStore rendezvous and
// ProcessGroupGloo collectives on the CPU, or ProcessGroupNCCL on CUDA devices when
// build.rs defines QATC_NCCL (a libtorch with CUDA, and NCCL's and CUDA's headers),
// behind a C interface that Rust calls.
//
// Every entry point catches every C++ exception and returns -1; the message is kept
// per thread and read with qatc_dist_last_error(). No exception may cross into Rust.

#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#ifdef QATC_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace {

thread_local std::string last_error;

// The first line of a c10 message (the rest is a C++ backtrace).
std::string first_line(const std::string& s) {
  auto end = s.find('\n');
  return end == std::string::npos ? s : s.substr(0, end);
}

template <typename F>
int guarded(F&& body) {
  try {
    body();
    return 0;
  } catch (const c10::Error& e) {
    last_error = first_line(e.what_without_backtrace());
  } catch (const std::exception& e) {
    last_error = first_line(e.what());
  } catch (...) {
    last_error = "unknown C++ exception";
  }
  return -1;
}

}  // namespace

struct qatc_store {
  c10::intrusive_ptr<c10d::TCPStore> store;
};

struct qatc_group {
  c10::intrusive_ptr<c10d::Store> store;
  // ProcessGroupGloo or ProcessGroupNCCL: the collectives below are Backend's.
  c10::intrusive_ptr<c10d::Backend> pg;
  std::chrono::milliseconds timeout;
};

namespace {

c10::intrusive_ptr<c10d::Backend> gloo_group(const c10::intrusive_ptr<c10d::Store>& store,
                                              int rank, int world,
                                              std::chrono::milliseconds timeout,
                                              int device_kind, const char* device_arg) {
  auto pg_store = c10::make_intrusive<c10d::PrefixStore>("cpu/", store);
  auto options = c10d::ProcessGroupGloo::Options::create(timeout);
  switch (device_kind) {
    case 1:
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(device_arg));
      break;
    case 2:
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(device_arg));
      break;
    default:
      options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  }
  options->threads = 1;
  auto pg = c10::make_intrusive<c10d::ProcessGroupGloo>(pg_store, rank, world, options);
  pg->setSequenceNumberForGroup();
  return pg;
}

c10::intrusive_ptr<c10d::Backend> nccl_group(const c10::intrusive_ptr<c10d::Store>& store,
                                              int rank, int world,
                                              std::chrono::milliseconds timeout,
                                              int cuda_device) {
#ifdef QATC_NCCL
  // As init_process_group(backend="nccl", device_id=...) does: this process's device
  // is current and bound to the group, and the communicator is made now, so that a
  // rank that never arrives shows at rendezvous rather than at the first collective.
  auto device = at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(cuda_device));
  c10::cuda::set_device(device.index());
  auto pg_store = c10::make_intrusive<c10d::PrefixStore>("cuda/", store);
  auto options = c10d::ProcessGroupNCCL::Options::create();
  options->timeout = timeout;
  auto pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(pg_store, rank, world, options);
  pg->setBoundDeviceId(device);
  pg->setSequenceNumberForGroup();
  pg->eagerConnectSingleDevice(device);
  return pg;
#else
  (void)store, (void)rank, (void)world, (void)timeout, (void)cuda_device;
  throw std::runtime_error("this qatc was built without NCCL");
#endif
}

}  // namespace

extern "C" {

const char* qatc_dist_last_error() { return last_error.c_str(); }

// Hosts a TCPStore on `port` (0: any free port) for `world` workers that connect as
// clients, as torchrun's elastic agent does. Writes the port it listens on.
int qatc_dist_host_store(int port, int world, int64_t timeout_ms, qatc_store** out,
                         int* bound_port) {
  return guarded([&] {
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<std::uint16_t>(port);
    opts.isServer = true;
    opts.numWorkers = std::nullopt;
    opts.waitWorkers = false;
    opts.timeout = std::chrono::milliseconds(timeout_ms);
    auto store = c10::make_intrusive<c10d::TCPStore>("0.0.0.0", opts);
    *bound_port = store->getPort();
    *out = new qatc_store{store};
  });
}

void qatc_dist_free_store(qatc_store* store) {
  guarded([&] { delete store; });
}

// Joins the group: connects to (or, when host_store, hosts) the TCPStore at host:port,
// then rendezvous of `world` ranks. `cuda_device` < 0: Gloo on the CPU, where
// `device_kind` says how Gloo finds its address: 0 the default device (this machine's
// hostname), 1 the address `device_arg`, 2 the network interface `device_arg`.
// `cuda_device` >= 0: NCCL on that CUDA device (QATC_NCCL builds only).
int qatc_dist_connect(const char* host, int port, int rank, int world, int host_store,
                      int64_t timeout_ms, int device_kind, const char* device_arg,
                      int cuda_device, qatc_group** out) {
  return guarded([&] {
    auto timeout = std::chrono::milliseconds(timeout_ms);
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<std::uint16_t>(port);
    opts.isServer = host_store != 0;
    opts.numWorkers = world;
    opts.waitWorkers = false;
    opts.timeout = timeout;
    c10::intrusive_ptr<c10d::Store> store =
        c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    // The prefixes Python's init_process_group uses ("cpu/" or "cuda/" per backend),
    // so keys do not clash with tools that share the store.
    store = c10::make_intrusive<c10d::PrefixStore>("default_pg", store);
    store = c10::make_intrusive<c10d::PrefixStore>("0/", store);
    auto pg = cuda_device < 0
                  ? gloo_group(store, rank, world, timeout, device_kind, device_arg)
                  : nccl_group(store, rank, world, timeout, cuda_device);
    *out = new qatc_group{store, pg, timeout};
  });
}

// Leaves the group: `clean` (no collective failed) shuts NCCL's communicators down as
// destroy_process_group does; otherwise aborts them, since a dead peer would hang a
// clean shutdown. Both are no-ops for Gloo.
void qatc_dist_free_group(qatc_group* group, int clean) {
  guarded([&] {
    if (clean) {
      group->pg->shutdown();
    } else {
      group->pg->abort();
    }
  });
  guarded([&] { delete group; });
}

// Sets a key of the group's store (under the group's prefix).
int qatc_dist_store_set(qatc_group* g, const char* key, const uint8_t* value, size_t len) {
  return guarded([&] { g->store->set(key, std::vector<uint8_t>(value, value + len)); });
}

// Reads a key, waiting for it up to the group's timeout. Copies at most `cap` bytes
// and writes the full length.
int qatc_dist_store_get(qatc_group* g, const char* key, uint8_t* buf, size_t cap,
                        size_t* len) {
  return guarded([&] {
    auto value = g->store->get(key);
    *len = value.size();
    std::memcpy(buf, value.data(), std::min(cap, value.size()));
  });
}

// In-place allreduce of `n` tensors of one dtype, on the group's device (CPU for Gloo,
// the rank's CUDA device for NCCL) (one coalesced call when n > 1).
// op: 0 sum, 1 min, 2 max.
int qatc_dist_allreduce(qatc_group* g, at::Tensor** tensors, int n, int op) {
  return guarded([&] {
    std::vector<at::Tensor> ts;
    for (int i = 0; i < n; i++) ts.push_back(*tensors[i]);
    c10d::ReduceOp reduce = op == 1   ? c10d::ReduceOp::MIN
                            : op == 2 ? c10d::ReduceOp::MAX
                                      : c10d::ReduceOp::SUM;
    c10::intrusive_ptr<c10d::Work> work;
    if (n == 1) {
      c10d::AllreduceOptions o;
      o.reduceOp = reduce;
      o.timeout = g->timeout;
      work = g->pg->allreduce(ts, o);
    } else {
      c10d::AllreduceCoalescedOptions o;
      o.reduceOp = reduce;
      o.timeout = g->timeout;
      work = g->pg->allreduce_coalesced(ts, o);
    }
    work->wait(g->timeout);
  });
}

// In-place broadcast of `n` tensors (on the group's device) from `root`.
int qatc_dist_broadcast(qatc_group* g, at::Tensor** tensors, int n, int root) {
  return guarded([&] {
    for (int i = 0; i < n; i++) {
      std::vector<at::Tensor> ts{*tensors[i]};
      c10d::BroadcastOptions o;
      o.rootRank = root;
      o.timeout = g->timeout;
      g->pg->broadcast(ts, o)->wait(g->timeout);
    }
  });
}

int qatc_dist_barrier(qatc_group* g) {
  return guarded([&] {
    c10d::BarrierOptions o;
    o.timeout = g->timeout;
    g->pg->barrier(o)->wait(g->timeout);
  });
}

}  // extern "C"

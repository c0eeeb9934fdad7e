// The thinnest binding of libtorch's c10d that gear-c10d needs (see c10d_shim.h). Rendezvous is
// a TCPStore served by rank 0; the backend is ProcessGroupGloo (CPU tensors) or, when built with
// GEAR_C10D_NCCL, ProcessGroupNCCL (CUDA tensors). All code of the collectives is libtorch's.
#include "c10d_shim.h"

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef GEAR_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

struct gear_c10d_group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  std::chrono::milliseconds timeout;
};

namespace {

void set_error(char** err, const std::string& message) {
  if (err != nullptr) {
    *err = strdup(message.c_str());
  }
}

// Runs `body`, turning any exception into a message; returns 0 on success.
template <typename F>
int guarded(char** err, F&& body) {
  try {
    body();
    return 0;
  } catch (const c10::Error& e) {
    set_error(err, e.what_without_backtrace());
  } catch (const std::exception& e) {
    set_error(err, e.what());
  } catch (...) {
    set_error(err, "unknown C++ exception in c10d");
  }
  return 1;
}

bool is_loopback(const std::string& addr) {
  return addr == "localhost" || addr.rfind("127.", 0) == 0 || addr == "::1";
}

// Waits for `work` within the group's timeout; a failed collective rethrows its error.
void finish(gear_c10d_group* group, const c10::intrusive_ptr<c10d::Work>& work) {
  work->wait(group->timeout);
}

at::Tensor& tensor_of(void* t) {
  return *static_cast<at::Tensor*>(t);
}

} // namespace

extern "C" {

int gear_c10d_backends(void) {
#ifdef GEAR_C10D_NCCL
  return 3;
#else
  return 1;
#endif
}

gear_c10d_group* gear_c10d_new(
    const char* backend,
    const char* master_addr,
    int master_port,
    int rank,
    int world_size,
    int64_t timeout_ms,
    char** err) {
  auto group = std::make_unique<gear_c10d_group>();
  group->timeout = std::chrono::milliseconds(timeout_ms);
  int status = guarded(err, [&] {
    const std::string name(backend);
    const std::string addr(master_addr);
    c10d::TCPStoreOptions options;
    options.port = static_cast<std::uint16_t>(master_port);
    options.isServer = rank == 0;
    options.numWorkers = static_cast<std::size_t>(world_size);
    options.waitWorkers = true;
    options.timeout = group->timeout;
    group->store = c10::make_intrusive<c10d::TCPStore>(addr, options);
    if (name == "gloo") {
      auto gloo = c10d::ProcessGroupGloo::Options::create(group->timeout);
      const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
      if (ifname != nullptr && *ifname != '\0') {
        gloo->devices.push_back(
            c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
      } else if (is_loopback(addr)) {
        gloo->devices.push_back(
            c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
      } else {
        gloo->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      }
      group->backend = c10::make_intrusive<c10d::ProcessGroupGloo>(
          group->store, rank, world_size, gloo);
    } else if (name == "nccl") {
#ifdef GEAR_C10D_NCCL
      auto nccl = c10d::ProcessGroupNCCL::Options::create();
      nccl->timeout = group->timeout;
      group->backend = c10::make_intrusive<c10d::ProcessGroupNCCL>(
          group->store, rank, world_size, nccl);
#else
      throw std::runtime_error(
          "this build of gear-c10d has no NCCL backend (built without CUDA headers)");
#endif
    } else {
      throw std::runtime_error("unknown c10d backend `" + name + "` (gloo or nccl)");
    }
  });
  if (status != 0) {
    return nullptr;
  }
  return group.release();
}

int gear_c10d_all_reduce_sum(gear_c10d_group* group, void* tensor, char** err) {
  return guarded(err, [&] {
    std::vector<at::Tensor> tensors{tensor_of(tensor)};
    c10d::AllreduceOptions options;
    options.reduceOp = c10d::ReduceOp::SUM;
    options.timeout = group->timeout;
    finish(group, group->backend->allreduce(tensors, options));
  });
}

int gear_c10d_broadcast(gear_c10d_group* group, void* tensor, int root, char** err) {
  return guarded(err, [&] {
    std::vector<at::Tensor> tensors{tensor_of(tensor)};
    c10d::BroadcastOptions options;
    options.rootRank = root;
    options.rootTensor = 0;
    options.timeout = group->timeout;
    finish(group, group->backend->broadcast(tensors, options));
  });
}

int gear_c10d_all_gather(gear_c10d_group* group, void* output, void* input, char** err) {
  return guarded(err, [&] {
    c10d::AllgatherOptions options;
    options.timeout = group->timeout;
    finish(
        group,
        group->backend->_allgather_base(tensor_of(output), tensor_of(input), options));
  });
}

int gear_c10d_barrier(gear_c10d_group* group, char** err) {
  return guarded(err, [&] {
    c10d::BarrierOptions options;
    options.timeout = group->timeout;
    finish(group, group->backend->barrier(options));
  });
}

void gear_c10d_free(gear_c10d_group* group) {
  delete group;
}

void gear_c10d_free_string(char* s) {
  std::free(s);
}

} // extern "C"

// See precision_shim.h. Every cast decision is libtorch's autocast policy; every feature flag is
// libtorch's own reading of the processor.
#include "precision_shim.h"

#include <ATen/autocast_mode.h>
#include <ATen/cpu/Utils.h>

#include <cstring>
#include <string>

namespace {
at::DeviceType device_type(int cuda) {
  return cuda != 0 ? at::kCUDA : at::kCPU;
}

bool flag(const std::unordered_map<std::string, c10::IValue>& caps, const char* key) {
  const auto it = caps.find(key);
  return it != caps.end() && it->second.isBool() && it->second.toBool();
}
} // namespace

extern "C" {

void gear_autocast_enter_bf16(int cuda, int* prev_enabled, int* prev_dtype) {
  const auto d = device_type(cuda);
  *prev_enabled = at::autocast::is_autocast_enabled(d) ? 1 : 0;
  *prev_dtype = static_cast<int>(at::autocast::get_autocast_dtype(d));
  at::autocast::set_autocast_dtype(d, at::kBFloat16);
  at::autocast::set_autocast_enabled(d, true);
  at::autocast::increment_nesting();
}

void gear_autocast_exit(int cuda, int prev_enabled, int prev_dtype) {
  const auto d = device_type(cuda);
  if (at::autocast::decrement_nesting() == 0) {
    at::autocast::clear_cache();
  }
  at::autocast::set_autocast_enabled(d, prev_enabled != 0);
  at::autocast::set_autocast_dtype(d, static_cast<at::ScalarType>(prev_dtype));
}

void gear_cpu_bf16(int* avx512_bf16, int* amx_bf16, char* name, size_t name_len) {
  const auto caps = at::cpu::get_cpu_capabilities();
  *avx512_bf16 = flag(caps, "avx512_bf16") ? 1 : 0;
  // AMX needs the kernel's permission for its tile state; libtorch asks for it here.
  *amx_bf16 = flag(caps, "amx_bf16") && at::cpu::init_amx() ? 1 : 0;
  std::string cpu;
  const auto it = caps.find("cpu_name");
  if (it != caps.end() && it->second.isString()) {
    cpu = it->second.toStringRef();
  }
  if (name_len > 0) {
    const size_t n = cpu.size() < name_len - 1 ? cpu.size() : name_len - 1;
    std::memcpy(name, cpu.data(), n);
    name[n] = '\0';
  }
}

} // extern "C"

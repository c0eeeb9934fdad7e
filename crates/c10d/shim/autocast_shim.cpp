// See autocast_shim.h. Every cast decision is libtorch's autocast policy.
#include "autocast_shim.h"

#include <ATen/autocast_mode.h>

namespace {
at::DeviceType device_type(int cuda) {
  return cuda != 0 ? at::kCUDA : at::kCPU;
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

} // extern "C"

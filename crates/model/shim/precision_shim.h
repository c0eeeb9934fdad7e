// bfloat16 for gear-model: the one autocast setting tch does not reach (the dtype), on
// libtorch's own autocast, and the processor features libtorch itself reads (through cpuinfo) to
// choose its bfloat16 kernels. `cuda` selects the device type (1: CUDA, 0: CPU). Autocast state
// is per thread: enter and exit on the same thread.
#ifndef GEAR_PRECISION_SHIM_H
#define GEAR_PRECISION_SHIM_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

// Enables autocast to bfloat16 for the device type and enters one nesting level; stores the
// previous enabled flag and dtype (a c10::ScalarType) for gear_autocast_exit.
void gear_autocast_enter_bf16(int cuda, int* prev_enabled, int* prev_dtype);
// Leaves the nesting level (clearing the cast cache at the outermost) and restores the state.
void gear_autocast_exit(int cuda, int prev_enabled, int prev_dtype);

// The CPU's bfloat16 instructions as libtorch sees them: AVX-512 BF16 and AMX-BF16 (1 or 0),
// and the processor's name, NUL-terminated, cut to `name_len - 1` bytes.
void gear_cpu_bf16(int* avx512_bf16, int* amx_bf16, char* name, size_t name_len);

#ifdef __cplusplus
}
#endif
#endif

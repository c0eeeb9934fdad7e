// Mixed precision for gear-train: the one autocast setting tch does not reach (the dtype), on
// libtorch's own autocast. `cuda` selects the device type (1: CUDA, 0: CPU). Autocast state is
// per thread: enter and exit on the same thread.
#ifndef GEAR_AUTOCAST_SHIM_H
#define GEAR_AUTOCAST_SHIM_H

#ifdef __cplusplus
extern "C" {
#endif

// Enables autocast to bfloat16 for the device type and enters one nesting level; stores the
// previous enabled flag and dtype (a c10::ScalarType) for gear_autocast_exit.
void gear_autocast_enter_bf16(int cuda, int* prev_enabled, int* prev_dtype);
// Leaves the nesting level (clearing the cast cache at the outermost) and restores the state.
void gear_autocast_exit(int cuda, int prev_enabled, int prev_dtype);

#ifdef __cplusplus
}
#endif
#endif

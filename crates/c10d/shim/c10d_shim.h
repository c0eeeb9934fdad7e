// The C interface of the c10d shim: a process group (TCPStore rendezvous + Gloo or NCCL backend)
// and the four collectives gear-c10d needs. Tensors are libtorch tensors as tch hands them over
// (`torch::Tensor*`). Every function that can fail returns NULL or a non-zero status and stores
// a message, allocated with malloc, in `*err`; free it with gear_c10d_free_string.
#ifndef GEAR_C10D_SHIM_H
#define GEAR_C10D_SHIM_H
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gear_c10d_group gear_c10d_group;

// Backends this build can create: bit 0 Gloo, bit 1 NCCL.
int gear_c10d_backends(void);

gear_c10d_group* gear_c10d_new(
    const char* backend,
    const char* master_addr,
    int master_port,
    int rank,
    int world_size,
    int64_t timeout_ms,
    char** err);
int gear_c10d_all_reduce_sum(gear_c10d_group* group, void* tensor, char** err);
int gear_c10d_broadcast(gear_c10d_group* group, void* tensor, int root, char** err);
int gear_c10d_all_gather(gear_c10d_group* group, void* output, void* input, char** err);
int gear_c10d_barrier(gear_c10d_group* group, char** err);
void gear_c10d_free(gear_c10d_group* group);
void gear_c10d_free_string(char* s);

#ifdef __cplusplus
}
#endif
#endif

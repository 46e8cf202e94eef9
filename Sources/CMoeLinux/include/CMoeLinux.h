// Thin C shim over liburing and libnuma. liburing's helpers are static inline
// functions and macros; the wrappers below give Swift stable, non-macro entry points.
// Linux only (as swift-nio's CNIOLinux): elsewhere the module is empty, so a wrong
// platform fails at the Swift call sites rather than inside a system header.
#ifndef MOE_CSYSTEM_H
#define MOE_CSYSTEM_H

#if defined(__linux__)

#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>
#include <liburing.h>
#include <numa.h>
#include <numaif.h>

// ---- io_uring ----
int moe_uring_queue_init(unsigned entries, struct io_uring *ring, unsigned flags);
void moe_uring_queue_exit(struct io_uring *ring);
/// Queues a read; returns 0, or -EBUSY when the submission queue is full.
int moe_uring_prep_read(struct io_uring *ring, int fd, void *buf, unsigned nbytes,
                        uint64_t offset, uint64_t user_data, int fixed_file, int buf_index);
int moe_uring_submit(struct io_uring *ring);
/// Waits for one completion (min_wait=1) or peeks (min_wait=0). Returns 0 and fills
/// *user_data / *res, -EAGAIN when nothing is ready on a peek, or another -errno.
int moe_uring_reap(struct io_uring *ring, int min_wait, uint64_t *user_data, int32_t *res);
int moe_uring_register_buffers(struct io_uring *ring, const void *const *bases,
                               const size_t *lengths, unsigned count);
int moe_uring_unregister_buffers(struct io_uring *ring);
int moe_uring_register_files(struct io_uring *ring, const int *fds, unsigned count);
unsigned moe_uring_sq_space_left(struct io_uring *ring);
size_t moe_uring_struct_size(void);
/// Submits queued SQEs and waits for at least wait_nr completions (retries EINTR).
/// Returns the number submitted or -errno.
int moe_uring_submit_and_wait(struct io_uring *ring, unsigned wait_nr);
/// Copies up to max ready completions into user_data[]/res[] and marks them seen.
/// Never blocks; returns how many were copied.
unsigned moe_uring_peek_batch(struct io_uring *ring, uint64_t *user_data, int32_t *res, unsigned max);

// ---- files and memory (constants Swift's Glibc module does not export) ----
/// O_DIRECT (needs _GNU_SOURCE, which Swift's Glibc import does not define).
int moe_o_direct(void);
/// madvise(MADV_HUGEPAGE); returns 0 or -errno. Advisory only.
int moe_madvise_hugepage(void *addr, size_t length);
/// madvise(MADV_POPULATE_WRITE) (Linux 5.14+); returns 0 or -errno (-EINVAL on older kernels).
int moe_madvise_populate_write(void *addr, size_t length);

// ---- CPU affinity (CPU_SET macros are not visible to Swift) ----
/// Restricts the calling thread (and threads it creates later) to cpus[0..<count].
/// Returns 0 or -errno.
int moe_set_cpu_affinity(const int *cpus, int count);
/// Writes up to max CPUs of the calling thread's affinity mask into cpus; returns how many
/// there are in all, or -errno.
int moe_get_cpu_affinity(int *cpus, int max);

// ---- libnuma ----
int moe_numa_available(void);
int moe_numa_max_node(void);
int moe_numa_node_of_cpu(int cpu);
void *moe_numa_alloc_onnode(size_t size, int node);
void moe_numa_free(void *start, size_t size);
/// Node holding the page at addr (after it has been touched), or -errno.
int moe_numa_node_of_address(void *addr);

#endif // __linux__

#endif

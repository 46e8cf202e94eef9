#if defined(__linux__)
#define _GNU_SOURCE
#include "CMoeLinux.h"
#include <fcntl.h>
#include <sys/mman.h>
#include <errno.h>
#include <string.h>
#include <sched.h>

int moe_uring_queue_init(unsigned entries, struct io_uring *ring, unsigned flags) {
    return io_uring_queue_init(entries, ring, flags);
}

void moe_uring_queue_exit(struct io_uring *ring) { io_uring_queue_exit(ring); }

int moe_uring_prep_read(struct io_uring *ring, int fd, void *buf, unsigned nbytes,
                        uint64_t offset, uint64_t user_data, int fixed_file, int buf_index) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    if (!sqe) return -EBUSY;
    if (buf_index >= 0) {
        io_uring_prep_read_fixed(sqe, fd, buf, nbytes, offset, buf_index);
    } else {
        io_uring_prep_read(sqe, fd, buf, nbytes, offset);
    }
    if (fixed_file) sqe->flags |= IOSQE_FIXED_FILE;
    io_uring_sqe_set_data64(sqe, user_data);
    return 0;
}

int moe_uring_submit(struct io_uring *ring) { return io_uring_submit(ring); }

int moe_uring_reap(struct io_uring *ring, int min_wait, uint64_t *user_data, int32_t *res) {
    struct io_uring_cqe *cqe = NULL;
    int rc;
    do {
        rc = min_wait ? io_uring_wait_cqe(ring, &cqe) : io_uring_peek_cqe(ring, &cqe);
    } while (rc == -EINTR);
    if (rc < 0) return rc;
    if (!cqe) return -EAGAIN;
    *user_data = io_uring_cqe_get_data64(cqe);
    *res = cqe->res;
    io_uring_cqe_seen(ring, cqe);
    return 0;
}

int moe_uring_register_buffers(struct io_uring *ring, const void *const *bases,
                               const size_t *lengths, unsigned count) {
    struct iovec iov[count ? count : 1];
    for (unsigned i = 0; i < count; i++) {
        iov[i].iov_base = (void *)bases[i];
        iov[i].iov_len = lengths[i];
    }
    return io_uring_register_buffers(ring, iov, count);
}

int moe_uring_unregister_buffers(struct io_uring *ring) { return io_uring_unregister_buffers(ring); }

int moe_uring_register_files(struct io_uring *ring, const int *fds, unsigned count) {
    return io_uring_register_files(ring, fds, count);
}

unsigned moe_uring_sq_space_left(struct io_uring *ring) { return io_uring_sq_space_left(ring); }

size_t moe_uring_struct_size(void) { return sizeof(struct io_uring); }

int moe_numa_available(void) { return numa_available(); }
int moe_numa_max_node(void) { return numa_max_node(); }
int moe_numa_node_of_cpu(int cpu) { return numa_node_of_cpu(cpu); }
void *moe_numa_alloc_onnode(size_t size, int node) { return numa_alloc_onnode(size, node); }
void moe_numa_free(void *start, size_t size) { numa_free(start, size); }

int moe_numa_node_of_address(void *addr) {
    int node = -1;
    void *pages[1] = {addr};
    int status[1] = {-1};
    long rc = move_pages(0, 1, pages, NULL, status, 0);
    if (rc < 0) return -errno;
    node = status[0];
    return node;
}

int moe_uring_submit_and_wait(struct io_uring *ring, unsigned wait_nr) {
    int rc;
    do {
        rc = io_uring_submit_and_wait(ring, wait_nr);
    } while (rc == -EINTR);
    return rc;
}

unsigned moe_uring_peek_batch(struct io_uring *ring, uint64_t *user_data, int32_t *res, unsigned max) {
    struct io_uring_cqe *cqes[64];
    unsigned total = 0;
    while (total < max) {
        unsigned want = max - total;
        if (want > 64) want = 64;
        unsigned got = io_uring_peek_batch_cqe(ring, cqes, want);
        if (got == 0) break;
        for (unsigned i = 0; i < got; i++) {
            user_data[total + i] = io_uring_cqe_get_data64(cqes[i]);
            res[total + i] = cqes[i]->res;
        }
        io_uring_cq_advance(ring, got);
        total += got;
    }
    return total;
}

int moe_o_direct(void) { return O_DIRECT; }

int moe_madvise_hugepage(void *addr, size_t length) {
#ifdef MADV_HUGEPAGE
    return madvise(addr, length, MADV_HUGEPAGE) == 0 ? 0 : -errno;
#else
    (void)addr; (void)length;
    return -EINVAL;
#endif
}

int moe_madvise_populate_write(void *addr, size_t length) {
#ifdef MADV_POPULATE_WRITE
    return madvise(addr, length, MADV_POPULATE_WRITE) == 0 ? 0 : -errno;
#else
    (void)addr; (void)length;
    return -EINVAL;
#endif
}

int moe_set_cpu_affinity(const int *cpus, int count) {
    cpu_set_t set;
    CPU_ZERO(&set);
    for (int i = 0; i < count; i++) {
        if (cpus[i] < 0 || cpus[i] >= CPU_SETSIZE) return -EINVAL;
        CPU_SET(cpus[i], &set);
    }
    return sched_setaffinity(0, sizeof(set), &set) == 0 ? 0 : -errno;
}

int moe_get_cpu_affinity(int *cpus, int max) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) != 0) return -errno;
    int n = 0;
    for (int c = 0; c < CPU_SETSIZE; c++) {
        if (CPU_ISSET(c, &set)) {
            if (n < max) cpus[n] = c;
            n++;
        }
    }
    return n;
}

#endif // __linux__

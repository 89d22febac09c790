/*
 * How much the first touch of memory costs on this machine, against touching it again.
 *
 *   gcc -O2 -o /tmp/first-touch scripts/first-touch.c && /tmp/first-touch [MiB]
 *
 * Maps MiB (default 1024) of anonymous memory, with and without transparent huge pages,
 * and writes one byte per 4 KiB page, four rounds each (each round unmaps its memory, so
 * the next round's pages come back from the kernel); then writes a file of that size into
 * the page cache three times (the file deleted in between). A virtual machine whose host
 * backs guest memory lazily and takes freed memory back (free page reporting) shows a
 * slow first round and fast later ones: see "Measuring on this machine" in
 * docs/performance.md. A fast first round means memory is not the bottleneck there.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int touch(size_t n, int huge) {
    for (int round = 0; round < 4; round++) {
        char *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) {
            perror("mmap");
            return 1;
        }
        madvise(p, n, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
        double t = now();
        for (size_t i = 0; i < n; i += 4096) p[i] = 1;
        double touched = now() - t;
        printf("memory, %s pages, round %d: %.3f s (%.2f GB/s)\n",
               huge ? "2 MiB huge" : "4 KiB", round, touched, n / 1e9 / touched);
        munmap(p, n);
    }
    return 0;
}

static int write_file(size_t n, const char *path) {
    size_t block = 1 << 20;
    char *b = malloc(block);
    if (b == NULL) return 1;
    memset(b, 3, block);
    for (int round = 0; round < 3; round++) {
        int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
        if (fd < 0) {
            perror(path);
            return 1;
        }
        double t = now();
        for (size_t i = 0; i < n; i += block)
            if (write(fd, b, block) != (ssize_t)block) {
                perror("write");
                return 1;
            }
        double wrote = now() - t;
        printf("file (page cache), round %d: %.3f s (%.2f GB/s)\n", round, wrote, n / 1e9 / wrote);
        close(fd);
        unlink(path);
    }
    free(b);
    return 0;
}

int main(int argc, char **argv) {
    size_t n = (size_t)(argc > 1 ? atol(argv[1]) : 1024) << 20;
    char path[] = "/tmp/first-touch-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) {
        perror("mkstemp");
        return 1;
    }
    close(fd);
    return touch(n, 1) || touch(n, 0) || write_file(n, path);
}

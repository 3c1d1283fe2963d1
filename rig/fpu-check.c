/* rig/fpu-check.c: does a dom0 process keep its SSE registers while Xen switches vCPUs?
 *
 * `rig/xen-rig.py --fpu-check S` runs it in dom0 beside the runs: THREADS threads each load a
 * pattern of their own into xmm0-2 and xmm7, spin, yield (a syscall: the kernel and Xen may
 * switch), spin, and read the registers back. A register that comes back with another value
 * is FPU state lost or leaked by a context switch below dom0. Under QEMU's TCG with Xen's lazy
 * FPU switching (CR0.TS), hundreds came back wrong a minute, other threads' patterns among
 * them: the heap corruption dom0's xl, QEMU and busybox died of. Static: dom0 has no libc
 * beyond what xl needs. Prints one line at the end: `fpu-check: N rounds, M bad`. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <immintrin.h>

enum { THREADS = 2 };

static long bad, rounds;
static time_t end;

static void *worker(void *arg)
{
    uint64_t seed = (uint64_t)(uintptr_t)arg * 0x9e3779b97f4a7c15ull + 1;
    while (time(NULL) < end) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        __m128i want = _mm_set_epi64x((long long)seed, (long long)~seed);
        __m128i got[4];
        /* In registers only between the loads and the stores: no compiler code in between. */
        __asm__ volatile("movdqa %4, %%xmm0\n\tmovdqa %4, %%xmm1\n\t"
                         "movdqa %4, %%xmm2\n\tmovdqa %4, %%xmm7\n\t"
                         "mov $20000, %%ecx\n1:\n\tdec %%ecx\n\tjnz 1b\n\t"
                         "mov $24, %%eax\n\tsyscall\n\t" /* sched_yield */
                         "mov $20000, %%ecx\n2:\n\tdec %%ecx\n\tjnz 2b\n\t"
                         "movdqa %%xmm0, %0\n\tmovdqa %%xmm1, %1\n\t"
                         "movdqa %%xmm2, %2\n\tmovdqa %%xmm7, %3\n\t"
                         : "=m"(got[0]), "=m"(got[1]), "=m"(got[2]), "=m"(got[3])
                         : "m"(want)
                         : "rax", "rcx", "r11", "xmm0", "xmm1", "xmm2", "xmm7", "memory");
        for (int i = 0; i < 4; i++) {
            if (memcmp(&got[i], &want, sizeof want) != 0) {
                __sync_fetch_and_add(&bad, 1);
            }
        }
        __sync_fetch_and_add(&rounds, 1);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 2 || atoi(argv[1]) <= 0) {
        fprintf(stderr, "usage: fpu-check SECONDS\n");
        return 2;
    }
    end = time(NULL) + atoi(argv[1]);
    pthread_t t[THREADS];
    for (long i = 0; i < THREADS; i++) {
        if (pthread_create(&t[i], NULL, worker, (void *)(i + 1)) != 0) {
            perror("fpu-check: pthread_create");
            return 1;
        }
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
    }
    printf("fpu-check: %ld rounds, %ld bad\n", rounds, bad);
    return bad != 0;
}

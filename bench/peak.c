/* The machine's floating-point peak: independent AVX-512 FMA chains held in registers.
 *
 *   cc -O2 -mavx512f -mavx512bf16 -pthread peak.c -o peak && ./peak f32|bf16 THREADS ITERS
 *
 * Each thread runs ITERS rounds of CHAINS independent accumulators (more chains than
 * FMA latency × pipes, so the pipes never wait), nothing touches memory in the loop.
 * FLOPs per instruction: vfmadd231ps 16 lanes × 2 = 32; vdpbf16ps 16 lanes × 2 pairs × 2
 * = 64. Prints one line: "<kind> <threads> <seconds> <GFLOP/s>".
 */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHAINS 24

static long iters;
static int bf16;
static volatile float sink[64];
static pthread_barrier_t barrier;

static void *work(void *arg) {
    long id = (long)arg;
    __m512 acc[CHAINS];
    for (int k = 0; k < CHAINS; k++) acc[k] = _mm512_set1_ps(1e-3f * (k + id));
    __m512 a = _mm512_set1_ps(0.999f), b = _mm512_set1_ps(1e-4f);
    __m512bh ah = _mm512_cvtne2ps_pbh(a, a), bh = _mm512_cvtne2ps_pbh(b, b);
    /* keep a, b in registers and opaque to the compiler */
    __asm__ volatile("" : "+v"(a), "+v"(b), "+v"(ah), "+v"(bh));
    pthread_barrier_wait(&barrier);
    if (bf16) {
        for (long i = 0; i < iters; i++) {
#pragma GCC unroll 24
            for (int k = 0; k < CHAINS; k++) acc[k] = _mm512_dpbf16_ps(acc[k], ah, bh);
        }
    } else {
        for (long i = 0; i < iters; i++) {
#pragma GCC unroll 24
            for (int k = 0; k < CHAINS; k++) acc[k] = _mm512_fmadd_ps(acc[k], a, b);
        }
    }
    __m512 s = acc[0];
    for (int k = 1; k < CHAINS; k++) s = _mm512_add_ps(s, acc[k]);
    sink[id % 64] = _mm512_reduce_add_ps(s);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4 || (strcmp(argv[1], "f32") && strcmp(argv[1], "bf16"))) {
        fprintf(stderr, "usage: %s f32|bf16 THREADS ITERS\n", argv[0]);
        return 2;
    }
    bf16 = !strcmp(argv[1], "bf16");
    int threads = atoi(argv[2]);
    iters = atol(argv[3]);
    if (threads < 1 || iters < 1) return 2;
    pthread_t *t = malloc(sizeof(pthread_t) * threads);
    pthread_barrier_init(&barrier, NULL, threads + 1);
    for (long i = 0; i < threads; i++) pthread_create(&t[i], NULL, work, (void *)i);
    struct timespec t0, t1;
    pthread_barrier_wait(&barrier);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec);
    double flop = (double)threads * iters * CHAINS * 16 * 2 * (bf16 ? 2 : 1);
    printf("%s %d %.6f %.3f\n", argv[1], threads, s, flop / s / 1e9);
    return 0;
}

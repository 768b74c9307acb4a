/* STREAM (McCalpin) copy/scale/add/triad with OpenMP: the independent reference for EV-3.
 *
 * Build: gcc -O3 -fopenmp -march=native stream_triad.c -o stream_triad
 * Run:   OMP_NUM_THREADS=2 ./stream_triad ELEMENTS NTIMES
 * Prints one JSON object per kernel: bandwidth of every pass after the first (STREAM drops it),
 * with bytes counted as STREAM does (copy/scale 2 arrays, add/triad 3, 8-byte doubles), and
 * checks the results like STREAM's checkSTREAMresults.
 */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 16L * 1024 * 1024;
    int ntimes = argc > 2 ? atoi(argv[2]) : 10;
    double *a = aligned_alloc(64, n * sizeof(double));
    double *b = aligned_alloc(64, n * sizeof(double));
    double *c = aligned_alloc(64, n * sizeof(double));
    if (!a || !b || !c) { fprintf(stderr, "allocation failed\n"); return 1; }
    const double q = 3.0;
#pragma omp parallel for
    for (long j = 0; j < n; j++) { a[j] = 1.0; b[j] = 2.0; c[j] = 0.0; } /* first touch per thread */
    const char *names[4] = {"copy", "scale", "add", "triad"};
    const int arrays[4] = {2, 2, 3, 3};
    double *seconds = calloc((size_t)4 * ntimes, sizeof(double));
    for (int k = 0; k < ntimes + 1; k++) {
        double t;
        t = omp_get_wtime();
#pragma omp parallel for
        for (long j = 0; j < n; j++) c[j] = a[j];
        t = omp_get_wtime() - t; if (k) seconds[0 * ntimes + k - 1] = t;
        t = omp_get_wtime();
#pragma omp parallel for
        for (long j = 0; j < n; j++) b[j] = q * c[j];
        t = omp_get_wtime() - t; if (k) seconds[1 * ntimes + k - 1] = t;
        t = omp_get_wtime();
#pragma omp parallel for
        for (long j = 0; j < n; j++) c[j] = a[j] + b[j];
        t = omp_get_wtime() - t; if (k) seconds[2 * ntimes + k - 1] = t;
        t = omp_get_wtime();
#pragma omp parallel for
        for (long j = 0; j < n; j++) a[j] = b[j] + q * c[j];
        t = omp_get_wtime() - t; if (k) seconds[3 * ntimes + k - 1] = t;
    }
    double aj = 1.0, bj = 2.0, cj = 0.0;
    for (int k = 0; k < ntimes + 1; k++) { cj = aj; bj = q * cj; cj = aj + bj; aj = bj + q * cj; }
    int ok = fabs(a[n / 2] - aj) / aj < 1e-13 && fabs(b[n / 2] - bj) / bj < 1e-13 && fabs(c[n / 2] - cj) / cj < 1e-13;
    for (int i = 0; i < 4; i++) {
        printf("{\"kernel\": \"%s\", \"threads\": %d, \"validated\": %s, \"samples_gbps\": [", names[i],
               omp_get_max_threads(), ok ? "true" : "false");
        for (int k = 0; k < ntimes; k++)
            printf("%s%.6f", k ? ", " : "", arrays[i] * 8.0 * n / seconds[i * ntimes + k] / 1e9);
        printf("]}\n");
    }
    free(seconds); free(a); free(b); free(c);
    return ok ? 0 : 2;
}

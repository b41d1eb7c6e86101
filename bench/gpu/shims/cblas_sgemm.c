/* libopenblas.so.0 (36 MB) reduced to the one function gistmem-server takes from it, for
 * bench/gpu/pack-service.sh's bundle only: cblas_sgemm, which only the CPU engine calls. Plain
 * loops: correct and slow (the CPU dry run of the bundle uses it on a tiny model). A GPU run
 * must never reach it: the first call says so on stderr. */
#include <stdio.h>

enum { kRowMajor = 101, kColMajor = 102, kNoTrans = 111 };

__attribute__((visibility("default"))) void cblas_sgemm(int order, int trans_a, int trans_b, int m,
                                                        int n, int k, float alpha, const float* a,
                                                        int lda, const float* b, int ldb,
                                                        float beta, float* c, int ldc) {
  static int warned;
  if (!warned) {
    warned = 1;
    fprintf(stderr, "cblas_sgemm: the bundle's plain-loop shim (bench/gpu/shims) is in use\n");
  }
  if (order == kColMajor) { /* C^T = B^T A^T: the same call in row-major terms */
    cblas_sgemm(kRowMajor, trans_b, trans_a, n, m, k, alpha, b, ldb, a, lda, beta, c, ldc);
    return;
  }
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < n; ++j) {
      float sum = 0.0f;
      for (int p = 0; p < k; ++p) {
        const float x = trans_a == kNoTrans ? a[(long)i * lda + p] : a[(long)p * lda + i];
        const float y = trans_b == kNoTrans ? b[(long)p * ldb + j] : b[(long)j * ldb + p];
        sum += x * y;
      }
      c[(long)i * ldc + j] = alpha * sum + (beta == 0.0f ? 0.0f : beta * c[(long)i * ldc + j]);
    }
  }
}

// Internal to paged attention: device-side pieces both kernels share (the visibility rule) and
// the PTX the tensor-core kernel is made of (cp.async, ldmatrix, mma.sync). Include only from
// .cu files.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>
#include <cstring>

namespace gistmem::cuda::attention {

// The visibility rule of memory/kv_layout.h for one (query, slot) pair. One function for every
// kernel's tile checks and scores, so that they all decide alike.
__device__ __forceinline__ bool Visible(bool shared, int kp, int from, int until, int qpos,
                                        int qclock, int sliding_window) {
  return (shared || (kp <= qpos && (sliding_window == 0 || qpos - kp < sliding_window))) &&
         from <= qclock && qclock <= until;
}

__device__ __forceinline__ uint32_t SharedAddress(const void* pointer) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(pointer));
}

// 16 bytes global -> shared, bypassing L1 (K/V rows are read once per CTA).
__device__ __forceinline__ void CpAsync16(uint32_t dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src) : "memory");
}
// 16 zero bytes into shared memory through the same async path (src-size 0: nothing is read;
// `valid_src` is any mapped global address).
__device__ __forceinline__ void CpAsyncZero16(uint32_t dst, const void* valid_src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, 0;\n" ::"r"(dst), "l"(valid_src)
               : "memory");
}
// 4 bytes (per-slot metadata, whose arrays have no 16-byte alignment).
__device__ __forceinline__ void CpAsync4(uint32_t dst, const void* src) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(dst), "l"(src) : "memory");
}
__device__ __forceinline__ void CpAsyncCommit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
// Waits until at most `kPending` of this thread's committed groups are still in flight.
template <int kPending>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

// Four 8x8 b16 matrices; lane l gives the address of row l % 8 of matrix l / 8, and register i
// receives matrix i in the mma fragment layout (lane: row lane / 4, columns 2 (lane % 4) + 0, 1).
__device__ __forceinline__ void LdMatrixX4(uint32_t (&r)[4], uint32_t address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}
// The same, each matrix transposed (lane: column lane / 4, rows 2 (lane % 4) + 0, 1).
__device__ __forceinline__ void LdMatrixX4Trans(uint32_t (&r)[4], uint32_t address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}

// d += a b: A 16x16 row-major bf16, B 16x8 column-major bf16, C/D 16x8 fp32.
__device__ __forceinline__ void MmaBf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                        uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats rounded to nearest bf16, packed: `lo` in bits 0-15 (the lower column of a
// fragment register), `hi` in bits 16-31.
__device__ __forceinline__ uint32_t PackBf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  uint32_t bits;
  memcpy(&bits, &v, sizeof(bits));
  return bits;
}

}  // namespace gistmem::cuda::attention

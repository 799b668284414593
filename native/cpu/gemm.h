// A small dense fp32 matrix product for the trainer's dense-ish passes (AuxK over dead
// latents): C[M, N] (+)= op(A)[M, K] * B[K, N], row-major, op(A) = A or A^T.
//
// Not a general BLAS: no transposed B, and sizes are the trainer's (K up to a batch, N up to
// d_in or a chunk of latents). Each C element is one sum over k in ascending order on one
// thread, so results do not depend on the thread count.
#pragma once
#include <cstdint>

namespace saekit::cpu {

// trans_a: A is stored [K, M] (lda >= M) and used transposed. accumulate: C += product.
void sgemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, bool trans_a, const float* B, int64_t ldb,
           float* C, int64_t ldc, bool accumulate);

}  // namespace saekit::cpu

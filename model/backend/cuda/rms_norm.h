// RMSNorm on the GPU: out = x * rsqrt(mean(x^2) + eps) * weight, row by row, fp32.
// Same function as the CPU reference gistmem::model::RmsNorm (model/backend/cpu/ops.h).
// The launchers (fp32 and bf16 output) are declared in model/backend/cuda/kernels.h.
#pragma once

#include "model/backend/cuda/kernels.h"

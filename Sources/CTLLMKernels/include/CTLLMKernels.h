// Umbrella header of the kernels target: every public header of it.
#pragma once
#include "tllm_kernels.h"
#include "tllm_quants.h"
#include "tllm_matmul.h"
#include "tllm_ops.h"
#include "tllm_q8.h"

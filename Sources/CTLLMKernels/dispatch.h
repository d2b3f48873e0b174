// Internal: the SIMD paths in force (detected features, possibly narrowed by tests).
#pragma once
unsigned tllm_active_features(void);

#include <stddef.h>
/// The rows [start, end) that thread `index` of `count` computes in a row-parallel product.
void tllm_row_range(size_t rows, int index, int count, size_t *start, size_t *end);

// Internal: the SIMD paths in force (detected features, possibly narrowed by tests).
#pragma once
unsigned tllm_active_features(void);

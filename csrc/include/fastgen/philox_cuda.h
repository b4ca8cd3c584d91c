// The noise state of one CUDA launch, torch-free: a mirror of torch's
// at::PhiloxCudaState and at::cuda::philox::unpack (ATen/cuda/detail/
// PhiloxCudaStateRaw.cuh, UnpackRaw.cuh), so that the CUDA kernels compile
// without torch while the glue hands them the generator's state.
//
// Outside CUDA-graph capture the seed and base offset are plain values. During
// capture they are device pointers to the generator's seed and offset, which
// torch rewrites before every replay, plus the offset this launch holds within
// the graph: a replayed graph therefore draws fresh noise each time.
#pragma once

#include <cstdint>

#include "fastgen/macros.h"

namespace fastgen {

struct PhiloxCudaArgs {
  uint64_t seed = 0;    // not captured
  uint64_t offset = 0;  // not captured: the base counter offset
  const int64_t* seed_ptr = nullptr;    // captured
  const int64_t* offset_ptr = nullptr;  // captured: the graph's base offset
  uint64_t offset_intragraph = 0;       // captured: this launch's offset within the graph
  bool captured = false;
};

// The seed and base counter offset of a call's stream (design.md, "The noise stream").
struct PhiloxSeedOffset {
  uint64_t seed;
  uint64_t offset;
};

// Read where the kernel runs: under capture the pointers are dereferenced on
// the device at replay time, never on the host.
FASTGEN_HOST_DEVICE PhiloxSeedOffset unpack(const PhiloxCudaArgs& args) {
  if (args.captured) {
    return {static_cast<uint64_t>(*args.seed_ptr),
            static_cast<uint64_t>(*args.offset_ptr) + args.offset_intragraph};
  }
  return {args.seed, args.offset};
}

}  // namespace fastgen

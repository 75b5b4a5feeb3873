#ifndef EXPERTD_TESTS_TESTING_FAULT_INJECTING_READER_H_
#define EXPERTD_TESTS_TESTING_FAULT_INJECTING_READER_H_

// Test support (target expertd_fault_injecting_reader, never linked by
// production code): an ExpertReader wrapper that injects the failures a disk
// produces (DESIGN.md §4). Test support lives in expertd::testing, like
// the rest of tests/testing/.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>

#include "io/expert_reader.h"

namespace expertd::testing {

struct FaultOptions {
  double eio_probability = 0.0;         // the request fails with EIO
  // The read ends short and stays short (as on a truncated file): the
  // request fails with DataLoss naming the offset and the bytes missing.
  double short_read_probability = 0.0;
  std::chrono::microseconds delay{0};   // added before completion
  uint64_t seed = 1;
  // When set, requests whose offset it accepts fail with EIO.
  std::function<bool(uint64_t offset)> fail_offset;
};

// Wraps `inner`; every request still goes through it, so completions arrive
// on a reader thread as the interface demands.
std::unique_ptr<io::ExpertReader> MakeFaultInjectingReader(std::unique_ptr<io::ExpertReader> inner,
                                                       const FaultOptions& options);

}  // namespace expertd::testing

#endif  // EXPERTD_TESTS_TESTING_FAULT_INJECTING_READER_H_

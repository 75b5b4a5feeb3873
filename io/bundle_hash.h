#ifndef EXPERTD_IO_BUNDLE_HASH_H_
#define EXPERTD_IO_BUNDLE_HASH_H_

// The checksum of an expert's bundle in the packed file (io/FORMAT.md):
// XXH64 (seed 0) in versions 1 and 2, XXH3's 64-bit hash (seed 0) from
// version 3. Every miss hashes its bundle on the read path, so the hash's
// speed is decode speed: on this project's AVX-512 VM, XXH64 hashes 16 GB/s
// and XXH3 43 GB/s (libxxhash's x86 dispatch picks AVX-512 or AVX2 at run
// time; without it, SSE2 gives 19 GB/s), 6.1 vs 2.3 us for a 96 KiB bundle.

#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/types/span.h"

namespace expertd::io {

enum class BundleHash { kXxh64, kXxh3 };

// "XXH64" / "XXH3", for errors.
const char* BundleHashName(BundleHash hash);

// The whole bundle at once.
uint64_t HashBundle(BundleHash hash, absl::Span<const std::byte> bytes);

// The same, fed in pieces in order.
class BundleHasher {
 public:
  explicit BundleHasher(BundleHash hash);
  ~BundleHasher();
  BundleHasher(const BundleHasher&) = delete;
  BundleHasher& operator=(const BundleHasher&) = delete;

  void Update(absl::Span<const std::byte> bytes);
  uint64_t Digest() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace expertd::io

#endif  // EXPERTD_IO_BUNDLE_HASH_H_

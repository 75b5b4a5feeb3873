#include "io/bundle_hash.h"

#include <xxh_x86dispatch.h>
#include <xxhash.h>

namespace expertd::io {

const char* BundleHashName(BundleHash hash) { return hash == BundleHash::kXxh3 ? "XXH3" : "XXH64"; }

uint64_t HashBundle(BundleHash hash, absl::Span<const std::byte> bytes) {
  return hash == BundleHash::kXxh3 ? XXH3_64bits_dispatch(bytes.data(), bytes.size())
                                   : XXH64(bytes.data(), bytes.size(), 0);
}

// One of the two states, made once; allocation failure is not survivable
// anyway (xxhash's create functions are malloc).
struct BundleHasher::State {
  explicit State(BundleHash h) : hash(h) {
    if (hash == BundleHash::kXxh3) {
      xxh3 = XXH3_createState();
      XXH3_64bits_reset(xxh3);
    } else {
      xxh64 = XXH64_createState();
      XXH64_reset(xxh64, 0);
    }
  }
  ~State() {
    XXH3_freeState(xxh3);
    XXH64_freeState(xxh64);
  }
  BundleHash hash;
  XXH3_state_t* xxh3 = nullptr;
  XXH64_state_t* xxh64 = nullptr;
};

BundleHasher::BundleHasher(BundleHash hash) : state_(std::make_unique<State>(hash)) {}
BundleHasher::~BundleHasher() = default;

void BundleHasher::Update(absl::Span<const std::byte> bytes) {
  if (state_->hash == BundleHash::kXxh3) {
    XXH3_64bits_update_dispatch(state_->xxh3, bytes.data(), bytes.size());
  } else {
    XXH64_update(state_->xxh64, bytes.data(), bytes.size());
  }
}

uint64_t BundleHasher::Digest() const {
  return state_->hash == BundleHash::kXxh3 ? XXH3_64bits_digest(state_->xxh3) : XXH64_digest(state_->xxh64);
}

}  // namespace expertd::io

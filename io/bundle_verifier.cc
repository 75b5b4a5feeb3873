#include "io/bundle_verifier.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace expertd::io {

absl::StatusOr<std::unique_ptr<BundleVerifier>> BundleVerifier::Start(const ExpertFile& file, int layer,
                                                                       int expert, const std::byte* data,
                                                                       uint64_t read_bytes, uint64_t piece_bytes) {
  absl::StatusOr<ExpertExtent> extent = file.Find(layer, expert);
  if (!extent.ok()) return extent.status();
  if (piece_bytes == 0) return absl::InvalidArgumentError("BundleVerifier: pieces of 0 bytes");
  if (read_bytes < extent->length) {
    return absl::InvalidArgumentError(absl::StrCat(file.path(), ": a read of ", read_bytes, " bytes cannot hold layer ",
                                                   layer, " expert ", expert, "'s bundle of ", extent->length));
  }
  return std::unique_ptr<BundleVerifier>(
      new BundleVerifier(file, layer, expert, data, read_bytes, piece_bytes, extent->length));
}

BundleVerifier::BundleVerifier(const ExpertFile& file, int layer, int expert, const std::byte* data,
                               uint64_t read_bytes, uint64_t piece_bytes, uint64_t bundle_bytes)
    : file_(file),
      layer_(layer),
      expert_(expert),
      data_(data),
      read_bytes_(read_bytes),
      piece_bytes_(piece_bytes),
      bundle_bytes_(bundle_bytes),
      arrived_(std::max<uint64_t>(1, (read_bytes + piece_bytes - 1) / piece_bytes)),
      outstanding_(static_cast<int>(arrived_.size())),
      hash_(std::make_unique<BundleHasher>(file.bundle_hash())) {}

BundleVerifier::~BundleVerifier() = default;

uint64_t BundleVerifier::piece_length(int piece) const {
  const uint64_t begin = piece_offset(piece);
  return begin >= read_bytes_ ? 0 : std::min(piece_bytes_, read_bytes_ - begin);
}

bool BundleVerifier::Arrived(int piece, const absl::Status& status) {
  std::lock_guard<std::mutex> lock(mu_);
  arrived_[static_cast<size_t>(piece)] = true;
  if (!status.ok() && result_.ok()) result_ = status;
  // After a failed read the bytes are not worth hashing: the fill fails.
  if (result_.ok()) HashArrivedLocked();
  if (--outstanding_ > 0) return false;
  if (result_.ok()) {
    result_ = file_.CheckChecksum(layer_, expert_, hash_->Digest());
    checksum_failed_ = !result_.ok();
  }
  return true;
}

void BundleVerifier::HashArrivedLocked() {
  // Under mu_, so pieces are hashed once each and in order whichever thread
  // their reads complete on; a piece arriving out of order waits for the
  // one before it, which hashes both.
  while (next_ < pieces() && arrived_[static_cast<size_t>(next_)]) {
    const uint64_t begin = piece_offset(next_);
    const uint64_t end = std::min(begin + piece_length(next_), bundle_bytes_);
    if (begin < end) hash_->Update(absl::MakeConstSpan(data_ + begin, end - begin));
    ++next_;
  }
}

}  // namespace expertd::io

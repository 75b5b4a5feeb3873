#ifndef EXPERTD_IO_BUNDLE_VERIFIER_H_
#define EXPERTD_IO_BUNDLE_VERIFIER_H_

// Checks one expert's bundle against the packed file's checksum while its
// read arrives in pieces, in any order and on any thread: each piece is
// hashed as soon as every piece before it has arrived, so the hash of a
// large bundle runs under the reads of its later pieces instead of after
// the last one. Measured on this project's VMs for a 3.9 MiB Q4_K_M expert:
// 512 KiB pieces submitted together arrive in order ~0.4 ms apart, hashing
// one takes ~0.1 ms, and hashing the whole bundle after the read took
// 0.5-1.1 ms, which every miss waited for (it ran on the reader's one
// completion thread, delaying the other reads' completions too).

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "io/bundle_hash.h"
#include "io/expert_file.h"

namespace expertd::io {

class BundleVerifier {
 public:
  // The expert's read lands at `data`, `read_bytes` long (its bundle's
  // length rounded up to the file's alignment: the bytes past the bundle
  // are not hashed), in pieces of `piece_bytes` (the last one shorter).
  // NotFound as ExpertFile::Find; InvalidArgument for a zero piece size or
  // a read shorter than the bundle.
  static absl::StatusOr<std::unique_ptr<BundleVerifier>> Start(const ExpertFile& file, int layer, int expert,
                                                               const std::byte* data, uint64_t read_bytes,
                                                               uint64_t piece_bytes);
  ~BundleVerifier();

  int pieces() const { return static_cast<int>(arrived_.size()); }
  uint64_t piece_offset(int piece) const { return static_cast<uint64_t>(piece) * piece_bytes_; }
  uint64_t piece_length(int piece) const;

  // Piece `piece`'s read ended with `status` (its bytes are in place when
  // OK). Thread-safe. Returns true for exactly one call, the one that
  // completes the last outstanding piece: result() is then final.
  bool Arrived(int piece, const absl::Status& status);
  // After the last piece: the first failed read's status, else
  // ExpertFile::Verify's DataLoss when the bytes differ, else OK.
  const absl::Status& result() const { return result_; }
  // Whether result() is a checksum mismatch (not a read error).
  bool checksum_failed() const { return checksum_failed_; }

 private:
  BundleVerifier(const ExpertFile& file, int layer, int expert, const std::byte* data, uint64_t read_bytes,
                 uint64_t piece_bytes, uint64_t bundle_bytes);
  // Hashes the pieces from next_ on that have arrived, in order.
  void HashArrivedLocked();

  const ExpertFile& file_;
  const int layer_;
  const int expert_;
  const std::byte* const data_;
  const uint64_t read_bytes_;
  const uint64_t piece_bytes_;
  const uint64_t bundle_bytes_;
  std::mutex mu_;
  std::vector<bool> arrived_;
  int next_ = 0;        // the first piece not yet hashed
  int outstanding_ = 0;  // pieces not yet arrived
  std::unique_ptr<BundleHasher> hash_;
  absl::Status result_;  // the first read error, then the outcome
  bool checksum_failed_ = false;
};

}  // namespace expertd::io

#endif  // EXPERTD_IO_BUNDLE_VERIFIER_H_
